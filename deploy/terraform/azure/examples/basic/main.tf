# spendwatch on Azure: a scan job every 15 minutes and the Slack endpoint in one Container Apps environment,
# reading two subscriptions through a custom reader role.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.10"
    }
  }
}

provider "azurerm" {
  features {}
  subscription_id = "00000000-0000-0000-0000-000000000001"
}

module "spendwatch" {
  source = "../.."

  location         = "westeurope"
  image            = "ghcr.io/acme/spendwatch:1.0.0"
  slack_channel    = "C0123ALERTS"
  schedule         = "*/15 * * * *"
  subscription_ids = ["00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"]
  alert_emails     = ["platform-oncall@example.com"]
  # The state's PostgreSQL URL goes in the vault's database-url secret (set it before the first run).
  use_database_url = true
}

output "slack_request_url" {
  description = "Slack app > Interactivity > Request URL (plus the path the app serves Slack on)."
  value       = module.spendwatch.slack_request_url
}

output "key_vault_name" {
  description = "Set the secrets here with az keyvault secret set."
  value       = module.spendwatch.key_vault_name
}
