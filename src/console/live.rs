//! Server-sent events for a campaign's page: its live block (state, progress, totals,
//! actions), sent again whenever it changes, checked once a second.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;

use super::campaigns::{campaign_id, groups_for, live_block, Progress};
use super::error::PageError;
use super::session::{is_live, Session};
use super::ConsoleState;

/// How often the store is asked.
const EVERY: Duration = Duration::from_secs(1);

struct Watch {
    state: ConsoleState,
    session: Session,
    id: i64,
    last: String,
    first: bool,
}

impl Watch {
    /// The block now, or `None` when the stream should end (the session or the campaign is
    /// gone, or the store fails).
    async fn render(&self) -> Option<String> {
        let account = self.session.account_id();
        let store = &self.state.app.store;
        let users = self.state.users().ok()?;
        let s = users.session(&self.session.id).await.ok()??;
        if !is_live(&s, self.state.now(), self.state.settings.idle_ms) {
            return None;
        }
        let c = store.campaign(account, self.id).await.ok()??;
        let totals = store.campaign_totals(self.id).await.ok()?;
        let groups = groups_for(&self.state, account, &c).await.ok()?;
        let p = Progress::of(&totals, c.iteration);
        Some(live_block(&c, &p, &groups, &self.session).into_string())
    }
}

/// `GET /console/campaigns/{id}/live`: `totals` events carrying the block's HTML.
pub async fn campaign(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, PageError> {
    let id = campaign_id(&id)?;
    state
        .app
        .store
        .campaign(session.account_id(), id)
        .await?
        .ok_or(PageError::NotFound)?;
    let watch = Watch {
        state,
        session,
        id,
        last: String::new(),
        first: true,
    };
    let stream = futures::stream::unfold(watch, |mut w| async move {
        loop {
            if !w.first {
                tokio::time::sleep(EVERY).await;
            }
            w.first = false;
            let html = w.render().await?;
            if html != w.last {
                w.last = html.clone();
                return Some((Ok(Event::default().event("totals").data(html)), w));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
