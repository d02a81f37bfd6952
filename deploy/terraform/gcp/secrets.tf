# Secrets are created empty; add their values out of band so they never enter Terraform state:
#   printf %s "$VALUE" | gcloud secrets versions add <name>-slack-signing-secret --data-file=-

locals {
  # database-url only with use_database_url: Cloud Run resolves a secret env var before an instance starts, so one
  # without a version would stop the jobs and the service from starting. Everything below (the secret, its access
  # grants, the env of the jobs and the service) iterates over this map, so leaving it out here leaves it out
  # everywhere.
  secrets = merge(
    {
      "slack-signing-secret" = { env = "SLACK_SIGNING_SECRET", readers = ["slack"] }
      "slack-bot-token"      = { env = "SLACK_BOT_TOKEN", readers = ["scanner", "slack"] }
    },
    var.use_database_url ? {
      "database-url" = { env = "SPENDWATCH_DATABASE_URL", readers = ["scanner", "slack"] }
    } : {}
  )
  secret_readers = {
    scanner = google_service_account.scanner.email
    slack   = google_service_account.slack.email
  }
  secret_grants = merge([
    for secret, s in local.secrets : { for r in s.readers : "${secret}/${r}" => { secret = secret, email = local.secret_readers[r] } }
  ]...)
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = "${var.name}-${each.key}"
  labels    = var.labels

  replication {
    auto {}
  }
}

# spendwatch's TOML configuration (no secrets in it), mounted at /etc/spendwatch/spendwatch.toml in the job and
# the service: `gcloud secrets versions add <name>-config --data-file=spendwatch.toml`.
resource "google_secret_manager_secret" "config" {
  project   = var.project_id
  secret_id = "${var.name}-config"
  labels    = var.labels

  replication {
    auto {}
  }
}

resource "google_secret_manager_secret_iam_member" "config" {
  for_each = local.secret_readers

  project   = var.project_id
  secret_id = google_secret_manager_secret.config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value}"
}

resource "google_secret_manager_secret_iam_member" "access" {
  for_each = local.secret_grants

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value.email}"
}
