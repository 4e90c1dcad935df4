//! The bootstrap service: a card group's rule gives each card operational subscriptions in
//! place of its factory bootstrap one. Each card's plan holds the IMSIs allocated to it; the
//! next step is read from the card's registry as last known (so a restart, a DIRTY card's
//! audit or a rollback leave nothing to repair by hand): download every rule subscription not
//! there yet (the first enabled at once), enable the first if it is not, then, when the rule
//! says `delete`, move the fallback to it and delete the bootstrap subscription.

use super::request::{download_kind, Kind, Requester};
use super::{Known, RouterError, SecureRouter};
use crate::store::subscriptions::{
    Applied, BootstrapEnd, BootstrapRule, OperationRecord, PlanRecord, PlanUpdate, RouterChange,
    SyncState,
};

/// Operations a plan may start before it is given up (a subscription no network accepts
/// would otherwise be retried for ever).
const MAX_ACTIONS: u32 = 12;
/// Plans made and advanced per sweep.
const PER_SWEEP: u32 = 500;

/// Who starts a plan's operations, as the audit trail names it.
fn bootstrapper() -> Requester {
    Requester("router:bootstrap".into())
}

/// A plan's step: its change, and the operation it starts.
struct Step {
    change: RouterChange,
    started: Option<(Known, OperationRecord, &'static str)>,
}

/// What a plan does next.
enum Next {
    Start(Kind),
    Done,
}

impl SecureRouter {
    /// Makes plans for the cards new in groups with a rule, and moves the ready ones on: each
    /// plan's step is worked out side by side with the others', and the operations started
    /// (each with its plan's new state) are written in one transaction.
    pub(super) async fn bootstrap(&self) -> Result<usize, RouterError> {
        let now = self.now();
        for p in self.subs()?.new_plans(PER_SWEEP, now).await? {
            if p.state == "FAILED" {
                tracing::warn!(iccid = %p.iccid, "bootstrap not possible: {}", p.detail);
            }
        }
        let ready = self.subs()?.ready_plans(PER_SWEEP).await?;
        // Each group's rule, read once per sweep.
        let mut rules = std::collections::HashMap::new();
        for p in &ready {
            if let std::collections::hash_map::Entry::Vacant(slot) =
                rules.entry((p.account_id.clone(), p.group_id))
            {
                slot.insert(self.subs()?.rule(&p.account_id, p.group_id).await?);
            }
        }
        let mut steps = Vec::with_capacity(ready.len());
        for chunk in ready.chunks(32) {
            let results = futures::future::join_all(chunk.iter().map(|plan| {
                let rule = rules
                    .get(&(plan.account_id.clone(), plan.group_id))
                    .cloned()
                    .flatten();
                self.step(plan, rule)
            }))
            .await;
            for r in results {
                if let Some(step) = r? {
                    steps.push(step);
                }
            }
        }
        let changes: Vec<RouterChange> = steps.iter().map(|s| s.change.clone()).collect();
        let applied = self.subs()?.apply_all(&changes).await?;
        let who = bootstrapper();
        let n = applied.iter().filter(|a| **a == Applied::Done).count();
        for (step, applied) in steps.into_iter().zip(applied) {
            if let Some((known, op, kind)) = &step.started {
                // A conflict (another operation came first) leaves the plan for the next sweep.
                let _ = self.started(known, op, kind, &who, applied);
            }
        }
        Ok(n)
    }

    /// The change that moves `plan` on, if any now.
    async fn step(
        &self,
        plan: &PlanRecord,
        rule: Option<BootstrapRule>,
    ) -> Result<Option<Step>, RouterError> {
        let now = self.now();
        let update = |state: &'static str, actions: u32, detail: String| {
            Some(Step {
                change: RouterChange {
                    iccid: plan.iccid.clone(),
                    account_id: plan.account_id.clone(),
                    plan: Some(PlanUpdate {
                        actions,
                        state,
                        detail,
                    }),
                    at: now,
                    ..RouterChange::default()
                },
                started: None,
            })
        };
        let Some(rule) = rule else {
            return Ok(update(
                "FAILED",
                plan.actions,
                "the rule was removed".into(),
            ));
        };
        let known = self.registry_of(&plan.account_id, &plan.iccid).await?;
        if known.sync.state != SyncState::Synced || known.sync.operation_id.is_some() {
            return Ok(None);
        }
        let next = match self.next_step(&rule, plan, &known).await {
            Ok(n) => n,
            Err(RouterError::Store(e)) => return Err(RouterError::Store(e)),
            Err(e) => return Ok(update("FAILED", plan.actions, e.to_string())),
        };
        match next {
            Next::Done => Ok(update("DONE", plan.actions, "bootstrapped".into())),
            Next::Start(_) if plan.actions >= MAX_ACTIONS => Ok(update(
                "FAILED",
                plan.actions,
                format!("given up after {MAX_ACTIONS} operations"),
            )),
            Next::Start(kind) => match self.prepare_start(&known, &kind, &bootstrapper()).await {
                Ok((op, mut change)) => {
                    change.plan = Some(PlanUpdate {
                        actions: plan.actions + 1,
                        state: "RUNNING",
                        detail: format!("{} {}", kind.name(), op.id),
                    });
                    Ok(Some(Step {
                        change,
                        started: Some((known, op, kind.name())),
                    }))
                }
                Err(RouterError::Conflict(..)) => Ok(None),
                Err(RouterError::Store(e)) => Err(RouterError::Store(e)),
                Err(e) => Ok(update("FAILED", plan.actions, e.to_string())),
            },
        }
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
