# Key Vault with RBAC: each identity may read only the secrets it uses. The secrets are created with a
# placeholder and Terraform ignores their value afterwards; set the real values out of band so they never
# enter Terraform state:
#   az keyvault secret set --vault-name <vault> --name slack-signing-secret --value '...'

data "azurerm_client_config" "current" {}

locals {
  # database-url only with use_database_url: until its value is set, the secret holds the placeholder, and the
  # containers refuse to start (SPENDWATCH_DATABASE_URL comes before the configuration's [serve] state and must
  # be a postgresql:// URL). Everything below (the secret, its role
  # assignments, the secret and env entries of the jobs and the app) iterates over this map, so leaving it out
  # here leaves it out everywhere.
  secrets = merge(
    {
      "slack-signing-secret" = { env = "SLACK_SIGNING_SECRET", readers = ["slack"] }
      "slack-bot-token"      = { env = "SLACK_BOT_TOKEN", readers = ["scanner", "slack"] }
      # spendwatch's TOML configuration (no secrets in it): mounted as the file /etc/spendwatch/spendwatch-toml.
      "spendwatch-toml" = { env = null, readers = ["scanner", "slack"] }
    },
    var.use_database_url ? {
      "database-url" = { env = "SPENDWATCH_DATABASE_URL", readers = ["scanner", "slack"] }
    } : {}
  )
  secret_readers = {
    scanner = azurerm_user_assigned_identity.scanner.principal_id
    slack   = azurerm_user_assigned_identity.slack.principal_id
  }
  secret_grants = merge([
    for secret, s in local.secrets : { for r in s.readers : "${secret}/${r}" => { secret = secret, reader = r } }
  ]...)
}

resource "azurerm_key_vault" "this" {
  #checkov:skip=CKV_AZURE_109:A consumption Container Apps environment without a VNet reaches Key Vault over its public endpoint; RBAC and managed identities guard it (a VNet-integrated environment with a private endpoint closes it).
  #checkov:skip=CKV_AZURE_189:As above: public network access is how a consumption environment without a VNet reads its secrets.
  #checkov:skip=CKV2_AZURE_32:As above: a private endpoint needs a VNet-integrated environment, which this module does not create.
  name                       = substr("${var.name}-${substr(md5(azurerm_resource_group.this.id), 0, 6)}", 0, 24)
  location                   = azurerm_resource_group.this.location
  resource_group_name        = azurerm_resource_group.this.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  sku_name                   = "standard"
  enable_rbac_authorization  = true
  purge_protection_enabled   = true
  soft_delete_retention_days = 90
  tags                       = local.tags

  network_acls {
    default_action = "Allow"
    bypass         = "AzureServices"
  }
}

# Whoever runs Terraform creates the secret entries (with the placeholder) and nothing else.
resource "azurerm_role_assignment" "deployer_secrets_officer" {
  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Secrets Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

resource "azurerm_key_vault_secret" "this" {
  #checkov:skip=CKV_AZURE_41:Slack secrets and the database URL do not expire on a calendar; an expiry date would stop spendwatch silently. Rotate them in Slack/the database and update the value out of band.
  for_each = local.secrets

  name         = each.key
  value        = "set-out-of-band"
  content_type = "text/plain"
  key_vault_id = azurerm_key_vault.this.id
  tags         = local.tags

  lifecycle {
    ignore_changes = [value, tags]
  }

  depends_on = [azurerm_role_assignment.deployer_secrets_officer]
}

resource "azurerm_role_assignment" "secret_reader" {
  for_each = local.secret_grants

  scope                = azurerm_key_vault_secret.this[each.value.secret].resource_versionless_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = local.secret_readers[each.value.reader]
  principal_type       = "ServicePrincipal"
}
