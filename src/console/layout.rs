//! The page chrome and the small pieces every page uses: times, numbers, status badges, the
//! form token.

use maud::{html, Markup, DOCTYPE};

use super::session::Session;
use crate::clock::Millis;

/// Which part of the console a page belongs to (highlighted in the navigation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The dashboard.
    Dashboard,
    /// Cards.
    Cards,
    /// Commands.
    Commands,
    /// Campaigns.
    Campaigns,
    /// Card groups.
    Groups,
    /// Subscription templates.
    Templates,
}

const NAV: [(Section, &str, &str); 6] = [
    (Section::Dashboard, "/console/", "Dashboard"),
    (Section::Cards, "/console/cards", "Cards"),
    (Section::Commands, "/console/commands", "Commands"),
    (Section::Campaigns, "/console/campaigns", "Campaigns"),
    (Section::Groups, "/console/groups", "Card groups"),
    (Section::Templates, "/console/templates", "Templates"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            // htmx would otherwise add an inline <style>, which the CSP refuses. Refusals
            // (4xx) are swapped like answers, so a form shows why it was refused in place.
            meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"responseHandling":[{"code":"204","swap":false},{"code":"[23]..","swap":true},{"code":"[45]..","swap":true,"error":false}]}"#;
            title { (title) " · otagw" }
            link rel="stylesheet" href="/console/assets/console.css";
            script src="/console/assets/htmx.min.js" defer {}
            script src="/console/assets/htmx-ext-sse.min.js" defer {}
            script src="/console/assets/console.js" defer {}
        }
    }
}

/// A page without navigation (login, errors).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top { span.brand { "otagw" small { "OTA gateway console" } } }
                main { (body) }
            }
        }
    }
}

/// A signed-in page: navigation, the user and their role, logout.
pub fn page(title: &str, here: Section, session: &Session, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body hx-ext="sse" {
                header.top {
                    a.brand href="/console/" { "otagw" small { (session.user.account_name) } }
                    nav {
                        @for (section, href, label) in NAV {
                            a href=(href) class=[(section == here).then_some("here")] { (label) }
                        }
                    }
                    div.who {
                        span { (session.user.name) " · " (session.user.role.as_str()) }
                        form method="post" action="/console/logout" {
                            (csrf_field(session))
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden field every form carries.
pub fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A time: UTC in the text (read without JavaScript), localized by `console.js`.
pub fn time(ms: Millis) -> Markup {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms) {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (t.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { "?" },
    }
}

/// An optional time, or a dash.
pub fn maybe_time(ms: Option<Millis>) -> Markup {
    match ms {
        Some(ms) => time(ms),
        None => html! { "—" },
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A status name in a colored badge (command, campaign and campaign-card states).
pub fn badge(status: &str) -> Markup {
    let class = match status.to_ascii_uppercase().as_str() {
        "SUCCESS" | "COMPLETED" | "POR_OK" | "UP" | "OK" => "ok",
        "FAILED" | "POR_ERROR" | "EXPIRED" | "DOWN" => "bad",
        "TERMINATED" | "CANCELLED" => "warn",
        "SENT" | "SENDING" | "DELIVERED" | "RUNNING" => "info",
        _ => "",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

/// A percentage with one decimal.
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0%".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// An empty-table line.
pub fn empty(text: &str) -> Markup {
    html! { p.empty { (text) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_times_read_as_operators_expect() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1_000), "1,000");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(percent(1, 3), "33.3%");
        let t = time(1_796_622_599_229).into_string();
        assert!(
            t.contains(r#"datetime="2026-12-07T05:49:59.229Z""#)
                && t.contains("2026-12-07 05:49:59 UTC"),
            "{t}"
        );
    }
}
