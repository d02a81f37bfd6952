# spendwatch on GCP: a scan job every 15 minutes and the Slack endpoint in one project, reading every project
# of the organization through a custom reader role.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.10"
    }
  }
}

provider "google" {
  project = "acme-spendwatch"
  region  = "europe-west1"
}

module "spendwatch" {
  source = "../.."

  project_id      = "acme-spendwatch"
  region          = "europe-west1"
  image           = "europe-docker.pkg.dev/acme-spendwatch/spendwatch/spendwatch:1.0.0"
  slack_channel   = "C0123ALERTS"
  schedule        = "*/15 * * * *"
  reader_scope    = "organization"
  organization_id = "123456789012"
  alert_emails    = ["platform-oncall@example.com"]
  # The state's PostgreSQL URL goes in the <name>-database-url secret (add a version before the first run).
  use_database_url = true
  # With [gcp.bigquery] export_uri = "gs://acme-spendwatch-scratch/spendwatch/": BigQuery writes the flow rows
  # there as Parquet for the scan to read back (give the bucket a one-day lifecycle rule).
  bigquery_export_bucket = "acme-spendwatch-scratch"
}

output "slack_request_url" {
  description = "Slack app > Interactivity > Request URL (plus the path the service serves Slack on)."
  value       = module.spendwatch.slack_request_url
}

output "secret_ids" {
  description = "Fill these with gcloud secrets versions add."
  value       = module.spendwatch.secret_ids
}
