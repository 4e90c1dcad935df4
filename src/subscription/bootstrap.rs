//! The bootstrap service: a card group's rule gives each card operational subscriptions in
//! place of its factory bootstrap one. Each card's plan holds the IMSIs allocated to it; the
//! next step is read from the card's registry as last known (so a restart, a DIRTY card's
//! audit or a rollback leave nothing to repair by hand): download every rule subscription not
//! there yet (the first enabled at once), enable the first if it is not, then, when the rule
//! says `delete`, move the fallback to it and delete the bootstrap subscription.

use super::request::{download_kind, Kind, Requester};
use super::{Known, RouterError, SecureRouter};
use crate::store::subscriptions::{BootstrapEnd, BootstrapRule, PlanRecord, SyncState};

/// Operations a plan may start before it is given up (a subscription no network accepts
/// would otherwise be retried for ever).
const MAX_ACTIONS: u32 = 12;
/// Plans made and advanced per sweep.
const PER_SWEEP: u32 = 500;

/// What a plan does next.
enum Next {
    Start(Kind),
    Done,
}

impl SecureRouter {
    /// Makes plans for the cards new in groups with a rule, and moves the ready ones on.
    pub(super) async fn bootstrap(&self) -> Result<(), RouterError> {
        let now = self.now();
        for p in self.subs()?.new_plans(PER_SWEEP, now).await? {
            if p.state == "FAILED" {
                tracing::warn!(iccid = %p.iccid, "bootstrap not possible: {}", p.detail);
            }
        }
        for plan in self.subs()?.ready_plans(PER_SWEEP).await? {
            self.advance(plan).await?;
        }
        Ok(())
    }

    async fn advance(&self, plan: PlanRecord) -> Result<(), RouterError> {
        let now = self.now();
        let subs = self.subs()?;
        let Some(rule) = subs.rule(&plan.account_id, plan.group_id).await? else {
            subs.update_plan(
                &plan.iccid,
                plan.actions,
                "FAILED",
                "the rule was removed",
                now,
            )
            .await?;
            return Ok(());
        };
        let known = self.registry_of(&plan.account_id, &plan.iccid).await?;
        if known.sync.state != SyncState::Synced || known.sync.operation_id.is_some() {
            return Ok(());
        }
        let next = match self.next_step(&rule, &plan, &known).await {
            Ok(n) => n,
            Err(e) => {
                subs.update_plan(&plan.iccid, plan.actions, "FAILED", &e.to_string(), now)
                    .await?;
                return Ok(());
            }
        };
        match next {
            Next::Done => {
                subs.update_plan(&plan.iccid, plan.actions, "DONE", "bootstrapped", now)
                    .await?;
                tracing::debug!(iccid = %plan.iccid, "card bootstrapped");
            }
            Next::Start(_) if plan.actions >= MAX_ACTIONS => {
                let why = format!("given up after {MAX_ACTIONS} operations");
                subs.update_plan(&plan.iccid, plan.actions, "FAILED", &why, now)
                    .await?;
            }
            Next::Start(kind) => {
                let name = kind.name();
                match self
                    .start(known, kind, &Requester("router:bootstrap".into()))
                    .await
                {
                    Ok(op) => {
                        let detail = format!("{name} {}", op.id);
                        subs.update_plan(&plan.iccid, plan.actions + 1, "RUNNING", &detail, now)
                            .await?;
                    }
                    // Another operation came first: the next sweep looks again.
                    Err(RouterError::Conflict(..)) => {}
                    Err(RouterError::Store(e)) => return Err(RouterError::Store(e)),
                    Err(e) => {
                        subs.update_plan(&plan.iccid, plan.actions, "FAILED", &e.to_string(), now)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The plan's next step, from the card's registry.
    async fn next_step(
        &self,
        rule: &BootstrapRule,
        plan: &PlanRecord,
        known: &Known,
    ) -> Result<Next, RouterError> {
        for (i, (sub, imsi)) in rule.subscriptions.iter().zip(&plan.imsis).enumerate() {
            if known.subscriptions.iter().any(|s| &s.imsi == imsi) {
                continue;
            }
            let template = self
                .subs()?
                .template(&plan.account_id, &sub.template)
                .await?
                .ok_or_else(|| RouterError::Invalid {
                    field: "template".into(),
                    problem: format!("no template {:?}", sub.template),
                })?;
            let kind = download_kind(known, template, imsi, (None, None), i == 0, false)?;
            return Ok(Next::Start(kind));
        }
        let Some(first) = plan
            .imsis
            .first()
            .and_then(|imsi| known.subscriptions.iter().find(|s| &s.imsi == imsi))
        else {
            return Err(RouterError::Invalid {
                field: "rule".into(),
                problem: "no subscription in the rule".into(),
            });
        };
        if !first.enabled {
            return Ok(Next::Start(Kind::Enable(first.id)));
        }
        if rule.bootstrap == BootstrapEnd::Delete {
            if !first.fallback {
                return Ok(Next::Start(Kind::Fallback(first.id)));
            }
            if let Some(b) = known
                .subscriptions
                .iter()
                .find(|s| s.bootstrap && !s.enabled && !s.fallback)
            {
                return Ok(Next::Start(Kind::Delete(b.id)));
            }
        }
        Ok(Next::Done)
    }
}
