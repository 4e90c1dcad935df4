//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{campaign_ops, campaigns, cards, commands, error, ops, scp81, subscriptions, tokens};
use crate::command;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Answers every operation can give, documented once: 401 (no or a bad token) where a token
/// is required, 400 (a body, path or query that does not parse) where there is one to parse.
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.patch.as_mut(),
            ];
            for op in operations.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let parses = op.request_body.is_some()
                    || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let responses = &mut op.responses.responses;
                if secured {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error("no token, or a token that is not valid"));
                }
                if parses {
                    responses.entry("400".into()).or_insert_with(|| {
                        error("a body, path or query parameter that does not parse")
                    });
                }
            }
        }
    }
}

/// Each command type's `data` (its parameters' schema, or `apdus` for RFM and RAM): the
/// parameter schemas join the components and `OtaCommandRequest` becomes
/// `allOf: [its fields, oneOf: one entry per type]` (see [`command::schema`]).
struct CommandShapes;

impl Modify for CommandShapes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AllOfBuilder, Schema};
        use utoipa::openapi::RefOr;
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, schema) in command::schema::components() {
            components.schemas.insert(name, schema);
        }
        let variants = command::schema::request_variants();
        if let Some(fields) = components.schemas.remove("OtaCommandRequest") {
            let whole = AllOfBuilder::new().item(fields).item(variants).build();
            components
                .schemas
                .insert("OtaCommandRequest".into(), RefOr::T(Schema::AllOf(whole)));
        }
    }
}

/// The API's document.
#[derive(OpenApi)]
#[openapi(
    info(title = "otagw", description = "OTA gateway for SIM cards: SCP80 over SMS-PP; commands, batches, cards, keys, webhooks, tokens. Every time is an RFC 3339 string in UTC with milliseconds (2026-12-07T05:49:12.123Z)."),
    paths(
        commands::create, commands::get_one, commands::cancel, commands::create_batch,
        commands::get_batch, cards::add_cards, cards::get_card, cards::list_cards,
        cards::update_card, cards::delete_card, cards::rotate_keys,
        cards::security_status, cards::upload_applet, cards::add_webhook, cards::list_webhooks,
        cards::delete_webhook, tokens::list, tokens::revoke,
        ops::health, ops::metrics_json, campaigns::create_profile, campaigns::list_profiles,
        campaigns::get_profile, campaigns::provision, campaigns::create_group,
        campaigns::list_groups, campaigns::get_group, campaign_ops::create, campaign_ops::list,
        campaign_ops::show, campaign_ops::start, campaign_ops::stop, campaign_ops::retry_failed,
        campaign_ops::cards,
        scp81::put_psk,
        subscriptions::list, subscriptions::download, subscriptions::enable,
        subscriptions::delete, subscriptions::fallback, subscriptions::audit,
        subscriptions::audit_trail, subscriptions::operation, subscriptions::create_template,
        subscriptions::list_templates, subscriptions::grant, subscriptions::grants,
        subscriptions::revoke_grant, subscriptions::set_rules, subscriptions::rules,
        subscriptions::bootstrap_progress,
    ),
    components(schemas(
        command::OtaCommandRequest, command::OtaResult, command::CommandType,
        command::CommandStatus, command::ErrorCode, command::Priority, command::Target,
        command::SecuritySettings, command::CommandData, command::CardResponse,
        command::StatusWordData, command::CommandError, command::CommandEvent,
        command::TransportChoice, command::TransportSpec, command::transport::TransportType,
        command::transport::TransportSecurity, command::transport::TransportParameters,
        error::ErrorBody, campaigns::CreateProfile, campaigns::Profile, campaigns::CardGroup,
        campaigns::CreateGroup, campaigns::Provisioned, crate::store::ProfileDefaults,
        crate::campaign::CampaignRequest, crate::campaign::CampaignSettings,
        crate::campaign::CampaignType, crate::campaign::TransmissionMode,
        crate::campaign::ops::CampaignView, crate::campaign::ops::IterationTotals,
        crate::campaign::ops::StartRequest, crate::campaign::ops::StartOutcome,
        campaign_ops::CampaignCard,
        scp81::PutPsk, tokens::TokenView, cards::CardPage, cards::UpdateCardBody, cards::CardRemoved,
        cards::CardView,
        subscriptions::SubscriptionsView, subscriptions::OperationAccepted,
        subscriptions::OperationView, subscriptions::TrailView,
        crate::subscription::DownloadRequest, crate::store::subscriptions::SubscriptionTemplate,
        crate::store::subscriptions::StoredSubscription, crate::store::subscriptions::SyncState,
        crate::store::subscriptions::Right, subscriptions::GrantRequest, subscriptions::GrantView,
        crate::store::subscriptions::BootstrapRule,
        crate::store::subscriptions::BootstrapSubscription,
        crate::store::subscriptions::BootstrapEnd, crate::store::subscriptions::BootstrapTrigger,
        subscriptions::BootstrapProgress,
    )),
    modifiers(&BearerAuth, &CommonResponses, &CommandShapes),
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
