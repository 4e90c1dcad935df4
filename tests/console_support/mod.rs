//! What the console's tests share: users made on the store, and a browser-like HTTP client
//! (cookies kept, redirects not followed) that signs in through the login form.
#![allow(dead_code)] // each test binary uses its own part

use otagw::console::password;
use otagw::devkit::DevEnv;
use otagw::store::users::{NewUser, Role};

/// A password long enough for the console.
pub const PASSWORD: &str = "correct horse battery staple";

/// Makes a user in `account_id` with [`PASSWORD`].
pub async fn add_user(env: &DevEnv, account_id: &str, name: &str, role: Role) {
    env.server
        .store
        .users()
        .expect("the SQL store keeps users")
        .create_user(
            &NewUser {
                account_id: account_id.to_string(),
                name: name.to_string(),
                role,
                password_hash: password::hash(PASSWORD).expect("hash"),
            },
            otagw::clock::now_ms(),
        )
        .await
        .expect("create user");
}

/// The `value` of the first hidden `csrf` field of a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    let rest = &html[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// A client with its own cookie jar.
pub struct Browser {
    pub base: String,
    pub client: reqwest::Client,
}

impl Browser {
    pub fn new(env: &DevEnv) -> Self {
        Self {
            base: env.server.base_url(),
            client: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let code = r.status().as_u16();
        (code, r.text().await.unwrap_or_default())
    }

    /// POSTs a form: (status, Location, body).
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .expect("POST");
        let code = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (code, location, r.text().await.unwrap_or_default())
    }

    /// Fills and posts the login form: the POST's answer, and the `Set-Cookie` values.
    pub async fn login(&self, name: &str, pw: &str) -> (u16, Vec<String>, String) {
        let (code, page) = self.get("/console/login").await;
        assert_eq!(code, 200, "{page}");
        let token = csrf_of(&page).expect("the login form has a token");
        let r = self
            .client
            .post(format!("{}/console/login", self.base))
            .form(&[("username", name), ("password", pw), ("csrf", &token)])
            .send()
            .await
            .expect("POST login");
        let code = r.status().as_u16();
        let cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        (code, cookies, r.text().await.unwrap_or_default())
    }

    /// Signs in and asserts it worked.
    pub async fn signed_in(env: &DevEnv, name: &str) -> Browser {
        let b = Browser::new(env);
        let (code, _, body) = b.login(name, PASSWORD).await;
        assert_eq!(code, 303, "login of {name}: {body}");
        b
    }

    /// The CSRF token of the session (from the dashboard's sign-out form).
    pub async fn csrf(&self) -> String {
        let (code, page) = self.get("/console/").await;
        assert_eq!(code, 200, "{page}");
        csrf_of(&page).expect("a form token")
    }
}

/// Creates an RFM campaign over REST on the devkit's `fleet` profile: its id.
pub async fn create_campaign(env: &DevEnv, name: &str) -> i64 {
    let (profile, _) = env.fleet_group.expect("a provisioned fleet");
    let (code, body) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": name, "type": "RFM",
                "commands": ["A0A40000027F20", "A0A40000026F46"]}),
        )
        .await
        .expect("POST campaign");
    assert_eq!(code, 201, "{body}");
    body["id"].as_i64().expect("id")
}
