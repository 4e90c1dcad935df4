//! Rows the command path appends (command events, outbox events) held until the end of their
//! transaction and written there in multi-row statements.
//!
//! A command makes about five state changes, each with its event and some with an outbox
//! event: written one by one, the appends were over half the statements of a group commit,
//! and on SQLite every statement is a round trip to the connection's worker thread. Appending
//! them at the end of the same transaction keeps them atomic with the change they report, in
//! the order the changes were applied (`seq` is assigned in that order).

use super::exec::{Arg, Exec};
use super::{insert_events, values_clause, Dialect, EventRow};
use crate::events::Event;
use crate::store::{Millis, StoreError};

/// Row counts a multi-row statement is built for: a run of rows is cut into these, largest
/// first, so a handful of statement texts serve every count (sqlx caches prepared
/// statements per text).
const STATEMENT_ROWS: [usize; 5] = [128, 32, 8, 2, 1];

/// Splits `n` rows into runs of [`STATEMENT_ROWS`] sizes.
fn statement_runs(mut n: usize) -> Vec<usize> {
    let mut runs = Vec::new();
    for size in STATEMENT_ROWS {
        while n >= size {
            runs.push(size);
            n -= size;
        }
    }
    runs
}

/// `rows` cut into runs of [`STATEMENT_ROWS`] sizes, in order: one multi-row statement each.
pub(super) fn statement_chunks<T>(rows: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = rows;
    statement_runs(rows.len()).into_iter().map(move |run| {
        let (chunk, later) = rest.split_at(run);
        rest = later;
        chunk
    })
}

struct PendingEvent {
    account_id: String,
    command_id: String,
    at: Millis,
    kind: String,
    detail: String,
}

struct PendingOutbox {
    account_id: String,
    event: Event,
    at: Millis,
}

/// What a transaction appends at its end.
#[derive(Default)]
pub(super) struct Deferred {
    events: Vec<PendingEvent>,
    outbox: Vec<PendingOutbox>,
}

impl Deferred {
    /// A command event.
    pub(super) fn event(
        &mut self,
        account_id: &str,
        command_id: &str,
        at: Millis,
        kind: &str,
        detail: String,
    ) {
        self.events.push(PendingEvent {
            account_id: account_id.to_string(),
            command_id: command_id.to_string(),
            at,
            kind: kind.to_string(),
            detail,
        });
    }

    /// Webhook events (written only for accounts with a webhook, as `outbox::insert_outbox`).
    pub(super) fn outbox(&mut self, account_id: &str, events: &[Event], at: Millis) {
        self.outbox.extend(events.iter().map(|event| PendingOutbox {
            account_id: account_id.to_string(),
            event: event.clone(),
            at,
        }));
    }

    /// Writes what was appended, in `tx`, before it commits.
    pub(super) async fn write<E: Exec>(
        self,
        dialect: Dialect,
        tx: &mut E,
    ) -> Result<(), StoreError> {
        if !self.events.is_empty() {
            let rows: Vec<EventRow<'_>> = self
                .events
                .iter()
                .map(|e| EventRow {
                    account_id: &e.account_id,
                    command_id: &e.command_id,
                    at: e.at,
                    kind: &e.kind,
                    detail: &e.detail,
                })
                .collect();
            insert_events(dialect, tx, &rows).await?;
        }
        for chunk in statement_chunks(&self.outbox) {
            insert_outbox_rows(dialect, tx, chunk).await?;
        }
        Ok(())
    }
}

/// One multi-row outbox insert; rows of accounts without a webhook are dropped by the
/// statement itself (no read on the command path). `VALUES` columns are `column1..` on both
/// SQLite and PostgreSQL.
async fn insert_outbox_rows<E: Exec>(
    dialect: Dialect,
    tx: &mut E,
    rows: &[PendingOutbox],
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO outbox (id, account_id, event_key, event, data, at) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6 \
         FROM (VALUES {}) AS v \
         WHERE EXISTS (SELECT 1 FROM webhooks w WHERE w.account_id = v.column2)",
        values_clause(dialect, rows.len(), 6)
    );
    let texts: Vec<[String; 3]> = rows
        .iter()
        .map(|r| {
            [
                uuid::Uuid::new_v4().to_string(),
                r.event.key(),
                r.event.data().to_string(),
            ]
        })
        .collect();
    let mut args: Vec<Arg<'_>> = Vec::with_capacity(rows.len() * 6);
    for (r, [id, key, data]) in rows.iter().zip(&texts) {
        args.extend([
            Arg::from(id),
            Arg::from(&r.account_id),
            Arg::from(key),
            Arg::from(r.event.name()),
            Arg::from(data),
            Arg::from(r.at),
        ]);
    }
    tx.execute(&sql, &args).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{statement_chunks, statement_runs};

    #[test]
    fn runs_cover_every_row_with_few_sizes() {
        for n in 0..600 {
            let runs = statement_runs(n);
            assert_eq!(runs.iter().sum::<usize>(), n, "{n}");
            assert!(runs.windows(2).all(|w| w[0] >= w[1]), "{n}: {runs:?}");
        }
        assert_eq!(statement_runs(300), vec![128, 128, 32, 8, 2, 2]);
        let rows: Vec<usize> = (0..300).collect();
        let chunks: Vec<&[usize]> = statement_chunks(&rows).collect();
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [128, 128, 32, 8, 2, 2]
        );
        assert_eq!(chunks.concat(), rows);
    }
}
