# Identities. The reader role's permissions come from roles/reader.json, generated from
# connectors/gcp/permissions.py, and the quarantine role's from roles/quarantine.json, generated from the GCP
# actions' declared permissions (spendwatch/actions/gcp.py), both by deploy/terraform/gen_policies.py: nothing
# here lists a permission by hand. Only the Slack service's account holds the quarantine role.

locals {
  reader     = jsondecode(file("${path.module}/roles/reader.json"))
  quarantine = jsondecode(file("${path.module}/roles/quarantine.json"))
}

resource "google_service_account" "scanner" {
  project      = var.project_id
  account_id   = "${var.name}-scanner"
  display_name = "spendwatch scheduled scan (read-only)"
}

resource "google_service_account" "slack" {
  project      = var.project_id
  account_id   = "${var.name}-slack"
  display_name = "spendwatch Slack endpoint (quarantine role only)"
}

resource "google_service_account" "scheduler" {
  project      = var.project_id
  account_id   = "${var.name}-scheduler"
  display_name = "spendwatch Cloud Scheduler: runs the scan job"
}

resource "google_organization_iam_custom_role" "reader" {
  count = var.reader_scope == "organization" ? 1 : 0

  org_id      = var.organization_id
  role_id     = var.reader_role_id
  title       = local.reader.title
  description = local.reader.description
  stage       = local.reader.stage
  permissions = local.reader.includedPermissions

  lifecycle {
    precondition {
      condition     = var.organization_id != null
      error_message = "reader_scope \"organization\" needs organization_id."
    }
  }
}

resource "google_organization_iam_member" "reader" {
  count = var.reader_scope == "organization" ? 1 : 0

  org_id = var.organization_id
  role   = google_organization_iam_custom_role.reader[0].name
  member = "serviceAccount:${google_service_account.scanner.email}"
}

# A project-level custom role can only be granted in its own project, so there is one per scanned project.
resource "google_project_iam_custom_role" "reader" {
  for_each = var.reader_scope == "project" ? toset(var.scan_project_ids) : toset([])

  project     = each.value
  role_id     = var.reader_role_id
  title       = local.reader.title
  description = local.reader.description
  stage       = local.reader.stage
  permissions = local.reader.includedPermissions
}

resource "google_project_iam_member" "reader" {
  for_each = google_project_iam_custom_role.reader

  project = each.key
  role    = each.value.name
  member  = "serviceAccount:${google_service_account.scanner.email}"
}

# [gcp.bigquery] export_uri: BigQuery's EXPORT DATA writes the flow rows as Parquet files to this bucket as the
# scanner's identity, which then reads them back. Granted on that bucket alone: the reader role stays read-only
# everywhere else (connectors/gcp/permissions.py, BUCKET_CALLS). Set a lifecycle rule on the bucket (or its
# spendwatch-export/ prefix) deleting objects after a day: each scan writes a new prefix and leaves it there.
resource "google_storage_bucket_iam_member" "export_writer" {
  count = var.bigquery_export_bucket == null ? 0 : 1

  bucket = var.bigquery_export_bucket
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.scanner.email}"
}

resource "google_storage_bucket_iam_member" "export_reader" {
  count = var.bigquery_export_bucket == null ? 0 : 1

  bucket = var.bigquery_export_bucket
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.scanner.email}"
}

# The quarantine role: what the Slack buttons (gcp.quarantine, gcp.release) may do, held by the Slack service's
# account alone, on the same scope as the reader role. enable_quarantine = false leaves it out (alerts only).
resource "google_organization_iam_custom_role" "quarantine" {
  count = var.enable_quarantine && var.reader_scope == "organization" ? 1 : 0

  org_id      = var.organization_id
  role_id     = var.quarantine_role_id
  title       = local.quarantine.title
  description = local.quarantine.description
  stage       = local.quarantine.stage
  permissions = local.quarantine.includedPermissions

  lifecycle {
    precondition {
      condition     = var.organization_id != null
      error_message = "reader_scope \"organization\" needs organization_id."
    }
  }
}

resource "google_organization_iam_member" "quarantine" {
  count = var.enable_quarantine && var.reader_scope == "organization" ? 1 : 0

  org_id = var.organization_id
  role   = google_organization_iam_custom_role.quarantine[0].name
  member = "serviceAccount:${google_service_account.slack.email}"
}

resource "google_project_iam_custom_role" "quarantine" {
  for_each = var.enable_quarantine && var.reader_scope == "project" ? toset(var.scan_project_ids) : toset([])

  project     = each.value
  role_id     = var.quarantine_role_id
  title       = local.quarantine.title
  description = local.quarantine.description
  stage       = local.quarantine.stage
  permissions = local.quarantine.includedPermissions
}

resource "google_project_iam_member" "quarantine" {
  for_each = google_project_iam_custom_role.quarantine

  project = each.key
  role    = each.value.name
  member  = "serviceAccount:${google_service_account.slack.email}"
}

# Logs and metrics from the job and the service themselves.
resource "google_project_iam_member" "log_writer" {
  # Static keys: the e-mails are only known after the accounts exist, and for_each keys must be known at plan.
  for_each = { scanner = google_service_account.scanner.email, slack = google_service_account.slack.email }

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${each.value}"
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_job" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.scan.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_retrain" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_job.retrain.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.scheduler.email}"
}

# Slack cannot present Google credentials; it signs each request and the service verifies the signature.
resource "google_cloud_run_v2_service_iam_member" "public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.slack.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}
