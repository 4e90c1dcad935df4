//! [`CampaignStore`] on the SQL store.
//!
//! Bulk statements (claims, updates) carry hundreds of rows each: on SQLite they use anonymous
//! `?` parameters (see `values_clause` for why), on PostgreSQL numbered ones.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::{
    bad_column, col, dbe, key_set_prefix, map_insert, to_u64, to_u8, Dialect, SqlStore, Tx,
};
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};
use crate::store::campaign::{
    CampaignCardRecord, CampaignRecord, CampaignStore, CampaignTarget, CardUpdate, ClaimKeys,
    ClaimedCard, NewCampaign, StateCount,
};
use crate::store::{KeySetRecord, Millis, StoreError};

/// Rows per bulk statement.
const CHUNK: usize = 400;

/// States a retry does not send again.
const SUCCEEDED: &str = "('por_ok', 'delivered')";

const CAMPAIGN_COLUMNS: &str = "id, account_id, profile_id, name, campaign_type, settings, \
     status, iteration, messages_per_card, created_at, updated_at, started_at, finished_at";

/// Parameter markers in the order they are written (and bound).
struct Params {
    dialect: Dialect,
    next: usize,
}

impl Params {
    fn new(dialect: Dialect) -> Self {
        Self { dialect, next: 1 }
    }

    fn p(&mut self) -> String {
        let i = self.next;
        self.next += 1;
        match self.dialect {
            Dialect::Postgres => format!("${i}"),
            Dialect::Sqlite => "?".into(),
        }
    }

    fn list(&mut self, n: usize) -> String {
        (0..n).map(|_| self.p()).collect::<Vec<_>>().join(", ")
    }

    fn rows(&mut self, rows: usize, cols: usize) -> String {
        (0..rows)
            .map(|_| format!("({})", self.list(cols)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn campaign_from_row(row: &AnyRow) -> Result<CampaignRecord, StoreError> {
    Ok(CampaignRecord {
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        profile_id: col(row, "profile_id")?,
        name: col(row, "name")?,
        campaign_type: col(row, "campaign_type")?,
        settings: col(row, "settings")?,
        status: col(row, "status")?,
        iteration: col(row, "iteration")?,
        messages_per_card: col(row, "messages_per_card")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
    })
}

fn invalid(field: &str, problem: String) -> StoreError {
    StoreError::Invalid {
        field: field.to_string(),
        problem,
    }
}

impl SqlStore {
    /// A key set row (with its `iccid` and `version` columns), keys opened.
    pub(super) fn key_set_from_row(
        &self,
        row: &AnyRow,
    ) -> Result<(String, KeySetRecord), StoreError> {
        let iccid: String = col(row, "iccid")?;
        let version = to_u8(col(row, "version")?, "key_sets.version")?;
        let kic_algorithm: Option<String> = col(row, "kic_algorithm")?;
        let kic_algorithm: Option<CipherAlgorithm> =
            kic_algorithm
                .map(|s| s.parse())
                .transpose()
                .map_err(|e| bad_column("key_sets.kic_algorithm", e))?;
        let kid_algorithm: Option<String> = col(row, "kid_algorithm")?;
        let kid_algorithm: Option<IntegrityAlgorithm> = kid_algorithm
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| bad_column("key_sets.kid_algorithm", e))?;
        let kic: Vec<u8> = col(row, "kic")?;
        let kid: Vec<u8> = col(row, "kid")?;
        let kik: Option<Vec<u8>> = col(row, "kik")?;
        let keys = self.open_keys(&key_set_prefix(&iccid, version), &kic, &kid, kik.as_deref())?;
        Ok((
            iccid,
            KeySetRecord {
                version,
                kic_algorithm,
                kid_algorithm,
                keys,
                counter: to_u64(col(row, "counter")?, "key_sets.counter")?,
                rotated_at: col(row, "rotated_at")?,
            },
        ))
    }

    /// The key set rows of these cards' KIc and KID versions (opened after the transaction:
    /// unsealing takes time the write lock should not wait for).
    async fn campaign_key_rows(
        &self,
        tx: &mut Tx,
        iccids: &[&str],
        keys: ClaimKeys,
    ) -> Result<Vec<AnyRow>, StoreError> {
        let mut p = Params::new(self.dialect);
        let sql = format!(
            "SELECT iccid, version, kic_algorithm, kid_algorithm, kic, kid, kik, counter, \
             rotated_at FROM key_sets WHERE version IN ({}) AND iccid IN ({})",
            p.list(2),
            p.list(iccids.len())
        );
        let mut q = sqlx::query(&sql)
            .bind(i64::from(keys.kic_version))
            .bind(i64::from(keys.kid_version));
        for i in iccids {
            q = q.bind(*i);
        }
        q.fetch_all(&mut **tx).await.map_err(dbe)
    }

    fn open_key_rows(
        &self,
        rows: &[AnyRow],
    ) -> Result<HashMap<(String, u8), KeySetRecord>, StoreError> {
        let mut out = HashMap::with_capacity(rows.len());
        for row in rows {
            let (iccid, set) = self.key_set_from_row(row)?;
            out.insert((iccid, set.version), set);
        }
        Ok(out)
    }

    async fn campaign_in_tx(
        &self,
        tx: &mut Tx,
        account_id: &str,
        id: i64,
    ) -> Result<CampaignRecord, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(dbe)?;
        match row {
            Some(row) => campaign_from_row(&row),
            None => Err(StoreError::NotFound {
                what: "campaign",
                key: id.to_string(),
            }),
        }
    }

    fn claimed(
        rows: &[AnyRow],
        sets: &HashMap<(String, u8), KeySetRecord>,
        keys: ClaimKeys,
        counters: &HashMap<String, u64>,
    ) -> Result<Vec<ClaimedCard>, StoreError> {
        rows.iter()
            .map(|row| {
                let iccid: String = col(row, "iccid")?;
                let counter = match counters.get(&iccid) {
                    Some(c) => Some(*c),
                    None => col::<Option<i64>>(row, "counter")?
                        .map(|c| to_u64(c, "campaign_cards.counter"))
                        .transpose()?,
                };
                let kic_set = sets.get(&(iccid.clone(), keys.kic_version)).cloned();
                let kid_set = sets.get(&(iccid.clone(), keys.kid_version)).cloned();
                Ok(ClaimedCard {
                    msisdn: col(row, "msisdn")?,
                    data: col(row, "data")?,
                    step: col(row, "step")?,
                    state: col(row, "state")?,
                    counter,
                    kic_set,
                    kid_set,
                    iccid,
                })
            })
            .collect()
    }
}

#[async_trait]
impl CampaignStore for SqlStore {
    async fn create_campaign(
        &self,
        c: &NewCampaign,
        now: Millis,
    ) -> Result<CampaignRecord, StoreError> {
        let mut tx = self.begin().await?;
        if !self
            .profile_exists(&mut tx, &c.account_id, c.profile_id)
            .await?
        {
            return Err(StoreError::NotFound {
                what: "profile",
                key: c.profile_id.to_string(),
            });
        }
        let taken = sqlx::query("SELECT id FROM campaigns WHERE profile_id = $1 AND name = $2")
            .bind(c.profile_id)
            .bind(&c.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(dbe)?;
        if taken.is_some() {
            return Err(StoreError::Duplicate {
                what: "campaign",
                key: c.name.clone(),
            });
        }
        let row = sqlx::query(&format!(
            "INSERT INTO campaigns (account_id, profile_id, name, campaign_type, settings, \
             status, iteration, messages_per_card, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'CREATED', 0, $6, $7, $7) RETURNING {CAMPAIGN_COLUMNS}"
        ))
        .bind(&c.account_id)
        .bind(c.profile_id)
        .bind(&c.name)
        .bind(&c.campaign_type)
        .bind(&c.settings)
        .bind(c.messages_per_card)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_insert(e, "campaign", &c.name, &c.account_id))?;
        let record = campaign_from_row(&row)?;
        tx.commit().await.map_err(dbe)?;
        Ok(record)
    }

    async fn campaign(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<Option<CampaignRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(campaign_from_row).transpose()
    }

    async fn campaigns(&self, account_id: &str) -> Result<Vec<CampaignRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(campaign_from_row).collect()
    }

    async fn start_campaign(
        &self,
        account_id: &str,
        id: i64,
        target: &CampaignTarget,
        data: &[(String, String)],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let campaign = self.campaign_in_tx(&mut tx, account_id, id).await?;
        if campaign.status != "CREATED" {
            return Err(invalid(
                "campaign",
                format!(
                    "campaign {id} is {}; only a CREATED campaign starts (retry-failed starts \
                     a new iteration of a COMPLETED or TERMINATED one)",
                    campaign.status
                ),
            ));
        }
        let inserted = match target {
            CampaignTarget::Group(group) => {
                let row = sqlx::query(
                    "SELECT profile_id FROM card_groups WHERE account_id = $1 AND id = $2",
                )
                .bind(account_id)
                .bind(*group)
                .fetch_optional(&mut *tx)
                .await
                .map_err(dbe)?;
                let Some(row) = row else {
                    return Err(StoreError::NotFound {
                        what: "card group",
                        key: group.to_string(),
                    });
                };
                let profile: i64 = col(&row, "profile_id")?;
                if profile != campaign.profile_id {
                    return Err(invalid(
                        "cardGroup",
                        format!(
                            "card group {group} belongs to profile {profile}, the campaign to \
                             profile {}",
                            campaign.profile_id
                        ),
                    ));
                }
                sqlx::query(
                    "INSERT INTO campaign_cards (campaign_id, iteration, iccid, state, progress, \
                     step, done, updated_at) \
                     SELECT $1, 1, iccid, 'pending', 0, 0, 0, $2 FROM card_group_members \
                     WHERE group_id = $3",
                )
                .bind(id)
                .bind(now)
                .bind(*group)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?
                .rows_affected()
            }
            CampaignTarget::Card(iccid) => sqlx::query(
                "INSERT INTO campaign_cards (campaign_id, iteration, iccid, state, progress, \
                 step, done, updated_at) \
                 SELECT $1, 1, p.iccid, 'pending', 0, 0, 0, $2 FROM profile_cards p \
                 JOIN cards c ON c.iccid = p.iccid \
                 WHERE p.profile_id = $3 AND p.iccid = $4 AND c.account_id = $5",
            )
            .bind(id)
            .bind(now)
            .bind(campaign.profile_id)
            .bind(iccid)
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .map_err(dbe)?
            .rows_affected(),
        };
        if inserted == 0 {
            return Err(invalid(
                "target",
                match target {
                    CampaignTarget::Group(g) => format!("card group {g} holds no cards"),
                    CampaignTarget::Card(i) => {
                        format!("card {i} is not a card of profile {}", campaign.profile_id)
                    }
                },
            ));
        }
        for (iccid, values) in data {
            sqlx::query(
                "UPDATE campaign_cards SET data = $1 \
                 WHERE campaign_id = $2 AND iteration = 1 AND iccid = $3",
            )
            .bind(values)
            .bind(id)
            .bind(iccid)
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        }
        sqlx::query(
            "UPDATE campaigns SET status = 'RUNNING', iteration = 1, started_at = $2, \
             finished_at = NULL, updated_at = $2, owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        Ok(inserted)
    }

    async fn retry_failed(
        &self,
        account_id: &str,
        id: i64,
        now: Millis,
    ) -> Result<(i64, u64), StoreError> {
        let mut tx = self.begin().await?;
        let campaign = self.campaign_in_tx(&mut tx, account_id, id).await?;
        if campaign.status != "COMPLETED" && campaign.status != "TERMINATED" {
            return Err(invalid(
                "campaign",
                format!(
                    "campaign {id} is {}; only a COMPLETED or TERMINATED campaign is retried",
                    campaign.status
                ),
            ));
        }
        let next = campaign.iteration + 1;
        let inserted = sqlx::query(&format!(
            "INSERT INTO campaign_cards (campaign_id, iteration, iccid, state, progress, step, \
             done, data, updated_at) \
             SELECT campaign_id, $1, iccid, 'pending', 0, 0, 0, data, $2 FROM campaign_cards \
             WHERE campaign_id = $3 AND iteration = $4 \
             AND NOT (done = 1 AND state IN {SUCCEEDED})"
        ))
        .bind(next)
        .bind(now)
        .bind(id)
        .bind(campaign.iteration)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?
        .rows_affected();
        if inserted == 0 {
            return Err(invalid(
                "campaign",
                format!(
                    "every card of campaign {id} succeeded in iteration {}: nothing to retry",
                    campaign.iteration
                ),
            ));
        }
        sqlx::query(
            "UPDATE campaigns SET status = 'RUNNING', iteration = $2, started_at = $3, \
             finished_at = NULL, updated_at = $3, owner = NULL, lease_until = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        Ok((next, inserted))
    }

    async fn set_campaign_status(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        now: Millis,
        events: &[crate::events::Event],
    ) -> Result<bool, StoreError> {
        let finished = matches!(to, "COMPLETED" | "TERMINATED");
        let mut p = Params::new(Dialect::Postgres);
        let (a, b) = (p.p(), p.p());
        let sql = format!(
            "UPDATE campaigns SET status = {a}, updated_at = {b}, {} owner = NULL, \
             lease_until = NULL WHERE id = {} AND status IN ({}) RETURNING account_id",
            if finished {
                format!("finished_at = {b},")
            } else {
                String::new()
            },
            p.p(),
            p.list(from.len())
        );
        let mut q = sqlx::query(&sql).bind(to).bind(now).bind(id);
        for f in from {
            q = q.bind(*f);
        }
        let mut tx = self.begin().await?;
        let Some(row) = q.fetch_optional(&mut *tx).await.map_err(dbe)? else {
            tx.rollback().await.map_err(dbe)?;
            return Ok(false);
        };
        let account_id: String = col(&row, "account_id")?;
        super::outbox::insert_outbox(&mut tx, &account_id, events, now).await?;
        tx.commit().await.map_err(dbe)?;
        Ok(true)
    }

    async fn lease_campaigns(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<CampaignRecord>, StoreError> {
        // A read first: with no campaign to run, a poll takes no write lock (see
        // `claim_outbox`).
        let leasable = sqlx::query(
            "SELECT 1 AS one FROM campaigns WHERE status = 'RUNNING' \
             AND (owner IS NULL OR owner = $1 OR lease_until < $2) LIMIT 1",
        )
        .bind(owner)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        if leasable.is_none() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "UPDATE campaigns SET owner = $1, lease_until = $2 WHERE status = 'RUNNING' \
             AND (owner IS NULL OR owner = $1 OR lease_until < $3) RETURNING {CAMPAIGN_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(campaign_from_row).collect()
    }

    async fn claim_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        after: &str,
        limit: u32,
        keys: ClaimKeys,
        now: Millis,
    ) -> Result<Vec<ClaimedCard>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "SELECT cc.iccid AS iccid, c.msisdn AS msisdn, cc.data AS data, cc.step AS step, \
             cc.state AS state, cc.counter AS counter \
             FROM campaign_cards cc JOIN cards c ON c.iccid = cc.iccid \
             WHERE cc.campaign_id = $1 AND cc.iteration = $2 AND cc.state = 'pending' \
             AND cc.iccid > $3 ORDER BY cc.iccid LIMIT $4",
        )
        .bind(campaign_id)
        .bind(iteration)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(dbe)?;
        if rows.is_empty() {
            tx.commit().await.map_err(dbe)?;
            return Ok(Vec::new());
        }
        let iccids: Vec<String> = rows
            .iter()
            .map(|r| col::<String>(r, "iccid"))
            .collect::<Result<_, _>>()?;
        let mut counters: HashMap<String, u64> = HashMap::with_capacity(iccids.len());
        let reserve = if keys.spends_counter {
            iccids.as_slice()
        } else {
            &[]
        };
        for chunk in reserve.chunks(CHUNK) {
            let mut p = Params::new(self.dialect);
            let sql = format!(
                "UPDATE key_sets SET counter = counter + 1 WHERE version = {} AND iccid IN ({}) \
                 RETURNING iccid, counter",
                p.p(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(i64::from(keys.counter_version));
            for i in chunk {
                q = q.bind(i.as_str());
            }
            for row in q.fetch_all(&mut *tx).await.map_err(dbe)? {
                let counter = to_u64(col(&row, "counter")?, "key_sets.counter")?;
                counters.insert(col(&row, "iccid")?, counter);
            }
        }
        // Cards with a counter go to `sending` with it; cards without that key set fail here.
        // A claim that spends no counter takes every card, with none.
        let (with, without): (Vec<&String>, Vec<&String>) = iccids
            .iter()
            .partition(|i| !keys.spends_counter || counters.contains_key(*i));
        for chunk in with.chunks(CHUNK) {
            let mut p = Params::new(self.dialect);
            // The counter just reserved is the key set's (same transaction): a primary-key
            // lookup per row.
            let counter = if keys.spends_counter {
                format!(
                    "(SELECT k.counter FROM key_sets k \
                     WHERE k.iccid = campaign_cards.iccid AND k.version = {})",
                    p.p()
                )
            } else {
                "NULL".to_string()
            };
            let sql = format!(
                "UPDATE campaign_cards SET state = 'sending', progress = step * 16 + 1, \
                 counter = {counter}, updated_at = {} \
                 WHERE campaign_id = {} AND iteration = {} AND iccid IN ({})",
                p.p(),
                p.p(),
                p.p(),
                p.list(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            if keys.spends_counter {
                q = q.bind(i64::from(keys.counter_version));
            }
            let mut q = q.bind(now).bind(campaign_id).bind(iteration);
            for i in chunk {
                q = q.bind(i.as_str());
            }
            q.execute(&mut *tx).await.map_err(dbe)?;
        }
        for iccid in &without {
            sqlx::query(
                "UPDATE campaign_cards SET state = 'failed', done = 1, progress = step * 16 + 8, \
                 detail = $1, updated_at = $2 \
                 WHERE campaign_id = $3 AND iteration = $4 AND iccid = $5",
            )
            .bind(format!(
                "the card has no key set version {}",
                keys.counter_version
            ))
            .bind(now)
            .bind(campaign_id)
            .bind(iteration)
            .bind(iccid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        }
        let with_refs: Vec<&str> = with.iter().map(|s| s.as_str()).collect();
        let mut key_rows = Vec::new();
        for chunk in with_refs.chunks(CHUNK) {
            key_rows.extend(self.campaign_key_rows(&mut tx, chunk, keys).await?);
        }
        tx.commit().await.map_err(dbe)?;
        let sets = self.open_key_rows(&key_rows)?;
        let rows: Vec<AnyRow> = rows
            .into_iter()
            .filter(|r| {
                !keys.spends_counter
                    || col::<String>(r, "iccid")
                        .map(|i| counters.contains_key(&i))
                        .unwrap_or(false)
            })
            .collect();
        let mut claimed = Self::claimed(&rows, &sets, keys, &counters)?;
        for c in &mut claimed {
            c.state = "sending".into();
        }
        Ok(claimed)
    }

    async fn in_flight_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        after: &str,
        limit: u32,
        keys: ClaimKeys,
    ) -> Result<Vec<ClaimedCard>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(dbe)?;
        let rows = sqlx::query(
            "SELECT cc.iccid AS iccid, c.msisdn AS msisdn, cc.data AS data, cc.step AS step, \
             cc.state AS state, cc.counter AS counter \
             FROM campaign_cards cc JOIN cards c ON c.iccid = cc.iccid \
             WHERE cc.campaign_id = $1 AND cc.iteration = $2 AND cc.done = 0 \
             AND cc.state IN ('sending', 'sent', 'delivered') \
             AND cc.iccid > $3 ORDER BY cc.iccid LIMIT $4",
        )
        .bind(campaign_id)
        .bind(iteration)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(dbe)?;
        let iccids: Vec<String> = rows
            .iter()
            .map(|r| col::<String>(r, "iccid"))
            .collect::<Result<_, _>>()?;
        let refs: Vec<&str> = iccids.iter().map(String::as_str).collect();
        let mut key_rows = Vec::new();
        for chunk in refs.chunks(CHUNK) {
            key_rows.extend(self.campaign_key_rows(&mut tx, chunk, keys).await?);
        }
        tx.commit().await.map_err(dbe)?;
        let sets = self.open_key_rows(&key_rows)?;
        Self::claimed(&rows, &sets, keys, &HashMap::new())
    }

    async fn update_campaign_cards(
        &self,
        updates: &[CardUpdate],
        now: Millis,
    ) -> Result<u64, StoreError> {
        // One update per row per statement: keep the furthest of each card's.
        let mut latest: HashMap<(i64, i64, &str), &CardUpdate> =
            HashMap::with_capacity(updates.len());
        for u in updates {
            let key = (u.campaign_id, u.iteration, u.iccid.as_str());
            match latest.get(&key) {
                Some(have) if have.progress >= u.progress => {}
                _ => {
                    latest.insert(key, u);
                }
            }
        }
        let rows: Vec<&CardUpdate> = latest.into_values().collect();
        let mut tx = self.begin().await?;
        let mut changed = 0;
        for chunk in rows.chunks(CHUNK) {
            let mut p = Params::new(self.dialect);
            let values = p.rows(chunk.len(), 9);
            let sql = format!(
                "WITH v (campaign_id, iteration, iccid, state, progress, step, done, counter, \
                 detail) AS (VALUES {values}) \
                 UPDATE campaign_cards SET state = v.state, progress = v.progress, \
                 step = v.step, done = v.done, \
                 counter = COALESCE(v.counter, campaign_cards.counter), \
                 detail = COALESCE(v.detail, campaign_cards.detail), updated_at = {} \
                 FROM v WHERE campaign_cards.campaign_id = v.campaign_id \
                 AND campaign_cards.iteration = v.iteration AND campaign_cards.iccid = v.iccid \
                 AND campaign_cards.progress < v.progress",
                p.p()
            );
            let mut q = sqlx::query(&sql);
            for u in chunk {
                q = q
                    .bind(u.campaign_id)
                    .bind(u.iteration)
                    .bind(u.iccid.as_str())
                    .bind(u.state.as_str())
                    .bind(u.progress)
                    .bind(u.step)
                    .bind(i64::from(u.done))
                    .bind(u.counter.map(|c| i64::try_from(c).unwrap_or(i64::MAX)))
                    .bind(u.detail.as_deref());
            }
            changed += q
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?
                .rows_affected();
        }
        tx.commit().await.map_err(dbe)?;
        Ok(changed)
    }

    async fn expire_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        now: Millis,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE campaign_cards SET state = 'expired', done = 1, progress = step * 16 + 8, \
             detail = 'validity period over before it was sent', updated_at = $3 \
             WHERE campaign_id = $1 AND iteration = $2 AND state = 'pending'",
        )
        .bind(campaign_id)
        .bind(iteration)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        Ok(done.rows_affected())
    }

    async fn campaign_totals(&self, campaign_id: i64) -> Result<Vec<StateCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT iteration, state, done, COUNT(*) AS cards FROM campaign_cards \
             WHERE campaign_id = $1 GROUP BY iteration, state, done ORDER BY iteration, state",
        )
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| {
                Ok(StateCount {
                    iteration: col(r, "iteration")?,
                    state: col(r, "state")?,
                    done: col::<i64>(r, "done")? != 0,
                    cards: to_u64(col(r, "cards")?, "cards")?,
                })
            })
            .collect()
    }

    async fn campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        state: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<CampaignCardRecord>, StoreError> {
        let filter = if state.is_some() {
            "AND state = $5"
        } else {
            ""
        };
        let sql = format!(
            "SELECT iteration, iccid, state, done, step, counter, detail, updated_at \
             FROM campaign_cards WHERE campaign_id = $1 AND iteration = $2 AND iccid > $3 \
             {filter} ORDER BY iccid LIMIT $4"
        );
        let mut q = sqlx::query(&sql)
            .bind(campaign_id)
            .bind(iteration)
            .bind(after)
            .bind(i64::from(limit));
        if let Some(s) = state {
            q = q.bind(s);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(dbe)?;
        rows.iter()
            .map(|r| {
                Ok(CampaignCardRecord {
                    iteration: col(r, "iteration")?,
                    iccid: col(r, "iccid")?,
                    state: col(r, "state")?,
                    done: col::<i64>(r, "done")? != 0,
                    step: col(r, "step")?,
                    counter: col::<Option<i64>>(r, "counter")?
                        .map(|c| to_u64(c, "campaign_cards.counter"))
                        .transpose()?,
                    detail: col(r, "detail")?,
                    updated_at: col(r, "updated_at")?,
                })
            })
            .collect()
    }
}
