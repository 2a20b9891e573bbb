-- Up Migration
--
-- Spec "Step 1: Backup Current Data", kept in intent and made safe:
--
-- * user_accounts_backup is a full copy, as the spec asks.
-- * oauth_tokens_backup does NOT copy access_token or refresh_token. A second table holding
--   every user's OAuth tokens would be a readable copy of every secret, outside the encryption
--   and access rules of oauth_tokens, kept long after the tokens rotate. Nothing in this
--   migration changes existing token values (the spec only adds columns), so the copy would
--   protect nothing; the database's own backups (Aurora automated backups and point-in-time
--   restore, see the infrastructure) are the recovery path for tokens. The backup keeps every
--   non-secret column, which is what the later steps could conceivably change.
-- * Both backups are owner-only: privileges revoked from PUBLIC and `authenticated`, and Row
--   Level Security enabled with no policy, so that no other role reads them even if a later
--   grant is made by mistake.
-- * CREATE TABLE AS takes only ACCESS SHARE on the source tables: writes carry on while the
--   copy runs. This migration is separate from the schema change so that the copy never runs
--   while the ALTER TABLE locks are held.
-- * IF NOT EXISTS: a backup made by an earlier, interrupted attempt is kept, never overwritten.

-- ACCESS SHARE conflicts only with ACCESS EXCLUSIVE: lock_timeout keeps us from queueing
-- behind someone's ALTER TABLE; the copy itself may take minutes at millions of rows.
SET LOCAL lock_timeout = '500ms';
SET LOCAL statement_timeout = '15min';

CREATE TABLE IF NOT EXISTS user_accounts_backup AS
  SELECT * FROM user_accounts;

CREATE TABLE IF NOT EXISTS oauth_tokens_backup AS
  SELECT id, user_id, expires_at, region, created_at, updated_at FROM oauth_tokens;

REVOKE ALL ON user_accounts_backup, oauth_tokens_backup FROM PUBLIC;
REVOKE ALL ON user_accounts_backup, oauth_tokens_backup FROM authenticated;
ALTER TABLE user_accounts_backup ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_tokens_backup ENABLE ROW LEVEL SECURITY;

COMMENT ON TABLE user_accounts_backup IS 'Copy of user_accounts taken before the account-sync schema change (migration 0002). Owner-only.';
COMMENT ON TABLE oauth_tokens_backup IS 'Non-secret columns of oauth_tokens taken before the token-refresh schema change (migration 0002); token values deliberately not copied. Owner-only.';

-- Down Migration
DROP TABLE IF EXISTS oauth_tokens_backup;
DROP TABLE IF EXISTS user_accounts_backup;
