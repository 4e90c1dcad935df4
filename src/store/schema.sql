-- The otagw schema, shared by SQLite and PostgreSQL. The store substitutes:
--   {int}    a 64-bit integer (INTEGER on SQLite, BIGINT on PostgreSQL)
--   {blob}   bytes (BLOB on SQLite, BYTEA on PostgreSQL)
--   {serial} an auto-increment primary key (INTEGER PRIMARY KEY / BIGSERIAL PRIMARY KEY)
-- Statements are separated by semicolons (none inside a statement). Every statement is
-- idempotent: the store runs them all at every start.
-- Timestamps are milliseconds since the Unix epoch. JSON values are TEXT. Key values
-- (kic, kid, kik, pending_*, secret) are AES-256-GCM sealed under the master key.

CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at {int} NOT NULL
);

CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    label TEXT NOT NULL,
    created_at {int} NOT NULL,
    -- Listing and revoking name a token by this id (filled in at open for older rows).
    id TEXT
);

CREATE INDEX IF NOT EXISTS tokens_account ON tokens (account_id);

CREATE TABLE IF NOT EXISTS cards (
    iccid TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    imsi TEXT,
    msisdn TEXT,
    attributes TEXT NOT NULL,
    created_at {int} NOT NULL
);

CREATE INDEX IF NOT EXISTS cards_account ON cards (account_id, iccid);

CREATE TABLE IF NOT EXISTS key_sets (
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    version {int} NOT NULL,
    kic_algorithm TEXT,
    kid_algorithm TEXT,
    kic {blob} NOT NULL,
    kid {blob} NOT NULL,
    kik {blob},
    counter {int} NOT NULL,
    rotated_at {int},
    PRIMARY KEY (iccid, version)
);

CREATE TABLE IF NOT EXISTS batches (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    options TEXT NOT NULL,
    command_ids TEXT NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (account_id, id)
);

CREATE TABLE IF NOT EXISTS commands (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    batch_id TEXT,
    command_type TEXT NOT NULL,
    iccid TEXT NOT NULL,
    transport TEXT NOT NULL,
    priority {int} NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    expires_at {int},
    sent_at {int},
    delivered_at {int},
    completed_at {int},
    attempts {int} NOT NULL DEFAULT 0,
    packet {blob},
    counter {int},
    key_version {int},
    msisdn TEXT,
    tar TEXT,
    spi TEXT,
    kic {int},
    kid {int},
    pending_kic {blob},
    pending_kid {blob},
    pending_kik {blob},
    response TEXT,
    error TEXT,
    error_code TEXT,
    owner TEXT,
    lease_until {int},
    PRIMARY KEY (account_id, id)
);

-- The claim's queue: live commands only, in claim order (finished commands, most of the
-- table, stay out of it, and so do their updates' dead entries). Replaces commands_queue.
CREATE INDEX IF NOT EXISTS commands_live ON commands (priority DESC, created_at, id)
    WHERE status IN ('PENDING', 'SENT', 'DELIVERED');

DROP INDEX IF EXISTS commands_queue;

CREATE INDEX IF NOT EXISTS commands_por ON commands (msisdn, tar);
-- A card's live commands: claims keep each card with one gateway at a time.
CREATE INDEX IF NOT EXISTS commands_card ON commands (iccid, status);

CREATE INDEX IF NOT EXISTS commands_expiry ON commands (status, expires_at);

-- Held commands only (a command that ends lets go of its owner). Replaces commands_owner.
CREATE INDEX IF NOT EXISTS commands_held ON commands (owner) WHERE owner IS NOT NULL;

DROP INDEX IF EXISTS commands_owner;

CREATE INDEX IF NOT EXISTS commands_batch ON commands (account_id, batch_id);

CREATE INDEX IF NOT EXISTS commands_account_status ON commands (account_id, status);

CREATE TABLE IF NOT EXISTS command_events (
    seq {serial},
    account_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    at {int} NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    FOREIGN KEY (account_id, command_id) REFERENCES commands (account_id, id)
);

CREATE INDEX IF NOT EXISTS command_events_command ON command_events (account_id, command_id, seq);

CREATE TABLE IF NOT EXISTS webhooks (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret {blob} NOT NULL,
    -- JSON array of the event names it receives; NULL or empty: every event.
    events TEXT,
    PRIMARY KEY (account_id, id)
);

CREATE TABLE IF NOT EXISTS applets (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    content {blob} NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (account_id, id)
);

CREATE TABLE IF NOT EXISTS profiles (
    id {serial},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    app_type TEXT,
    applet_id TEXT,
    tars TEXT NOT NULL,
    defaults TEXT NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    UNIQUE (account_id, name)
);

CREATE TABLE IF NOT EXISTS profile_cards (
    profile_id {int} NOT NULL REFERENCES profiles (id),
    iccid TEXT NOT NULL PRIMARY KEY REFERENCES cards (iccid)
);

CREATE INDEX IF NOT EXISTS profile_cards_profile ON profile_cards (profile_id, iccid);

CREATE TABLE IF NOT EXISTS card_groups (
    id {serial},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    profile_id {int} NOT NULL REFERENCES profiles (id),
    name TEXT NOT NULL,
    created_at {int} NOT NULL,
    UNIQUE (profile_id, name)
);

CREATE TABLE IF NOT EXISTS card_group_members (
    group_id {int} NOT NULL REFERENCES card_groups (id),
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    PRIMARY KEY (group_id, iccid)
);

CREATE INDEX IF NOT EXISTS cards_msisdn ON cards (msisdn);

CREATE TABLE IF NOT EXISTS campaigns (
    id {serial},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    profile_id {int} NOT NULL REFERENCES profiles (id),
    name TEXT NOT NULL,
    campaign_type TEXT NOT NULL,
    settings TEXT NOT NULL,
    status TEXT NOT NULL,
    iteration {int} NOT NULL,
    messages_per_card {int} NOT NULL,
    owner TEXT,
    lease_until {int},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    started_at {int},
    finished_at {int},
    UNIQUE (profile_id, name)
);

CREATE INDEX IF NOT EXISTS campaigns_status ON campaigns (status);
-- One row per card and iteration; progress = step * 16 + the state's rank, and an update is
-- applied only if it moves progress forward (late news never undo a result).
CREATE TABLE IF NOT EXISTS campaign_cards (
    campaign_id {int} NOT NULL REFERENCES campaigns (id),
    iteration {int} NOT NULL,
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    state TEXT NOT NULL,
    progress {int} NOT NULL,
    step {int} NOT NULL,
    done {int} NOT NULL,
    counter {int},
    data TEXT,
    detail TEXT,
    updated_at {int} NOT NULL,
    PRIMARY KEY (campaign_id, iteration, iccid)
);

CREATE INDEX IF NOT EXISTS campaign_cards_state ON campaign_cards (campaign_id, iteration, state, iccid);

-- SCP81 (HTTPS OTA): PSK-TLS keys, key versions 0x40-0x4F, sealed like the SCP80 keys.
CREATE TABLE IF NOT EXISTS scp81_keys (
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    version {int} NOT NULL,
    identity {blob} NOT NULL,
    psk {blob} NOT NULL,
    PRIMARY KEY (iccid, version)
);

CREATE UNIQUE INDEX IF NOT EXISTS scp81_keys_identity ON scp81_keys (identity);

-- SCP81: script chunks queued for a card's next administration session.
CREATE TABLE IF NOT EXISTS admin_chunks (
    account_id TEXT NOT NULL,
    command_id TEXT NOT NULL,
    seq {int} NOT NULL,
    iccid TEXT NOT NULL,
    script {blob} NOT NULL,
    targeted_application TEXT,
    kind TEXT,
    state TEXT NOT NULL,
    response {blob},
    script_status TEXT,
    sends {int} NOT NULL,
    queued_at {int} NOT NULL,
    updated_at {int} NOT NULL,
    PRIMARY KEY (account_id, command_id, seq)
);

CREATE INDEX IF NOT EXISTS admin_chunks_card ON admin_chunks (iccid, state, queued_at);

-- The store's own facts: the master key's check value (a known text sealed under it), so a
-- gateway started with another key refuses to start instead of failing on the first key read.
CREATE TABLE IF NOT EXISTS store_meta (
    name TEXT PRIMARY KEY,
    value {blob} NOT NULL
);

-- Events waiting for webhook delivery, written in the same transaction as the state change
-- they report (only for accounts with webhooks). A gateway claims a row with a lease, delivers
-- it and deletes it; only the oldest row of a key is claimed, so each command's (campaign's)
-- events go out in order.
CREATE TABLE IF NOT EXISTS outbox (
    seq {serial},
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    event TEXT NOT NULL,
    data TEXT NOT NULL,
    at {int} NOT NULL,
    owner TEXT,
    lease_until {int}
);

CREATE INDEX IF NOT EXISTS outbox_key ON outbox (event_key, seq);

-- The operators' console: users (names unique in the gateway; argon2 hashes in PHC form,
-- never passwords) and their sessions (the SHA-256 of the cookie's random id, as for tokens).
CREATE TABLE IF NOT EXISTS users (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at {int} NOT NULL
);

CREATE TABLE IF NOT EXISTS console_sessions (
    id_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id),
    csrf TEXT NOT NULL,
    created_at {int} NOT NULL,
    last_seen {int} NOT NULL,
    expires_at {int} NOT NULL
);

CREATE INDEX IF NOT EXISTS console_sessions_user ON console_sessions (user_id);

-- What people did in the console, with their names (the console's audit trail): sign-in and
-- sign-out, campaigns created, started, stopped, retried.
CREATE TABLE IF NOT EXISTS console_audit (
    seq {serial},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    at {int} NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS console_audit_account ON console_audit (account_id, target, seq);

-- The Secure Router (subscription management): each card's subscriptions as last known, its
-- sync state (SYNCED, PENDING, DIRTY; no row: never touched, the registry is the one
-- provisioning implies), the operations sent to cards, templates and each card's audit trail.
CREATE TABLE IF NOT EXISTS subscription_templates (
    account_id TEXT NOT NULL REFERENCES accounts (id),
    name TEXT NOT NULL,
    spn TEXT NOT NULL,
    plmns TEXT NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (account_id, name)
);

CREATE TABLE IF NOT EXISTS card_subscriptions (
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    sub_id {int} NOT NULL,
    imsi TEXT NOT NULL,
    enabled {int} NOT NULL,
    fallback {int} NOT NULL,
    bootstrap {int} NOT NULL,
    template TEXT,
    PRIMARY KEY (iccid, sub_id)
);

CREATE TABLE IF NOT EXISTS card_sync (
    iccid TEXT PRIMARY KEY REFERENCES cards (iccid),
    state TEXT NOT NULL,
    operation_id TEXT,
    reason TEXT NOT NULL,
    last_seq {int} NOT NULL,
    audit_attempts {int} NOT NULL,
    next_audit_at {int},
    updated_at {int} NOT NULL
);

CREATE INDEX IF NOT EXISTS card_sync_dirty ON card_sync (next_audit_at) WHERE state = 'DIRTY';

CREATE TABLE IF NOT EXISTS subscription_operations (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    iccid TEXT NOT NULL REFERENCES cards (iccid),
    kind TEXT NOT NULL,
    sub_id {int},
    params TEXT NOT NULL,
    state TEXT NOT NULL,
    command_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    result TEXT NOT NULL,
    deadline {int},
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);

CREATE INDEX IF NOT EXISTS subscription_operations_live ON subscription_operations (iccid, state)
    WHERE state IN ('SENT', 'AWAITING_NOTIFICATION');

CREATE TABLE IF NOT EXISTS card_audit_trail (
    seq {serial},
    account_id TEXT NOT NULL REFERENCES accounts (id),
    iccid TEXT NOT NULL,
    at {int} NOT NULL,
    what TEXT NOT NULL,
    who TEXT NOT NULL,
    operation_id TEXT,
    answer TEXT NOT NULL,
    state_before TEXT NOT NULL,
    state_after TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS card_audit_trail_card ON card_audit_trail (iccid, seq);

-- Enterprise permissions: an operator's account grants another account rights on one of its
-- card groups (`view`, `manage` subscriptions, `audit`; a comma list).
CREATE TABLE IF NOT EXISTS card_group_grants (
    group_id {int} NOT NULL REFERENCES card_groups (id),
    grantee_id TEXT NOT NULL REFERENCES accounts (id),
    rights TEXT NOT NULL,
    created_at {int} NOT NULL,
    PRIMARY KEY (group_id, grantee_id)
);

CREATE INDEX IF NOT EXISTS card_group_grants_grantee ON card_group_grants (grantee_id);

-- The bootstrap service: a rule per card group (which operational subscriptions its cards get
-- from which templates and IMSI ranges, what becomes of the bootstrap subscription) and a plan
-- per card (the IMSIs allocated to it, how far it got).
CREATE TABLE IF NOT EXISTS bootstrap_rules (
    group_id {int} PRIMARY KEY REFERENCES card_groups (id),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    rule TEXT NOT NULL,
    trigger_on TEXT NOT NULL,
    allocated {int} NOT NULL,
    updated_at {int} NOT NULL
);

CREATE TABLE IF NOT EXISTS bootstrap_plans (
    iccid TEXT PRIMARY KEY REFERENCES cards (iccid),
    account_id TEXT NOT NULL REFERENCES accounts (id),
    group_id {int} NOT NULL,
    imsis TEXT NOT NULL,
    actions {int} NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL,
    created_at {int} NOT NULL,
    updated_at {int} NOT NULL
);

CREATE INDEX IF NOT EXISTS bootstrap_plans_running ON bootstrap_plans (updated_at)
    WHERE state = 'RUNNING';

CREATE INDEX IF NOT EXISTS bootstrap_plans_group ON bootstrap_plans (group_id, state);
