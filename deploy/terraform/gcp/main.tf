# The scan job and its schedule, and the Slack endpoint. Identities in iam.tf, secrets in secrets.tf, alerting
# in alerts.tf. The container is the same image for both: `spendwatch serve --once` (one scan, then exit) in
# the job, `spendwatch serve --no-schedule` (Slack endpoint, /healthz and the approval sweep; no scans) in the
# service. Without --no-schedule the service would scan too, and its /healthz would turn 503 once its own scans
# were overdue (an instance scaled to zero runs none). A second job, `spendwatch model train --config`, retrains
# the baseline model daily.

locals {
  labels = merge({ "spendwatch-managed" = "true" }, var.labels)
  plain_environment = merge(var.environment, {
    SPENDWATCH_SLACK_CHANNEL = var.slack_channel
    SPENDWATCH_GCP_PROJECT   = var.project_id
  })
  job_secrets     = { for k, s in local.secrets : k => s if contains(s.readers, "scanner") }
  service_secrets = { for k, s in local.secrets : k => s if contains(s.readers, "slack") }
}

resource "google_cloud_run_v2_job" "scan" {
  project             = var.project_id
  location            = var.region
  name                = "${var.name}-scan"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.scanner.email
      timeout         = "${var.job_timeout_seconds}s"
      # No retries: the next scheduled scan resumes from the watermarks.
      max_retries = 0

      volumes {
        name = "config"
        secret {
          secret = google_secret_manager_secret.config.secret_id
          items {
            version = "latest"
            path    = "spendwatch.toml"
          }
        }
      }

      containers {
        image   = var.image
        command = ["spendwatch"]
        args    = ["serve", "--once", "--config", "/etc/spendwatch/spendwatch.toml"]

        volume_mounts {
          name       = "config"
          mount_path = "/etc/spendwatch"
        }

        resources {
          limits = {
            cpu    = var.job_cpu
            memory = var.job_memory
          }
        }

        dynamic "env" {
          for_each = local.plain_environment
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.job_secrets
          content {
            name = env.value.env
            value_source {
              secret_key_ref {
                secret  = google_secret_manager_secret.this[env.key].secret_id
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.access, google_secret_manager_secret_iam_member.config]
}

resource "google_cloud_scheduler_job" "scan" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-scan"
  description      = "spendwatch: run the scan job"
  schedule         = var.schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.scan.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_job]
}

# Daily model retraining: `spendwatch model train --config` reads the live clouds' history (the scans read
# incrementally and hold too little of it) and keeps the model with the state (a PostgreSQL state's `models`
# table: the database-url secret's with use_database_url). Same image, account, configuration and secrets as the
# scan job.
resource "google_cloud_run_v2_job" "retrain" {
  project             = var.project_id
  location            = var.region
  name                = "${var.name}-retrain"
  labels              = local.labels
  deletion_protection = var.deletion_protection

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = google_service_account.scanner.email
      timeout         = "${var.retrain_timeout_seconds}s"
      # No retries: the scans keep the last model until tomorrow's run.
      max_retries = 0

      volumes {
        name = "config"
        secret {
          secret = google_secret_manager_secret.config.secret_id
          items {
            version = "latest"
            path    = "spendwatch.toml"
          }
        }
      }

      containers {
        image   = var.image
        command = ["spendwatch"]
        args    = ["model", "train", "--config", "/etc/spendwatch/spendwatch.toml"]

        volume_mounts {
          name       = "config"
          mount_path = "/etc/spendwatch"
        }

        resources {
          limits = {
            cpu    = var.job_cpu
            memory = var.job_memory
          }
        }

        dynamic "env" {
          for_each = local.plain_environment
          content {
            name  = env.key
            value = env.value
          }
        }

        dynamic "env" {
          for_each = local.job_secrets
          content {
            name = env.value.env
            value_source {
              secret_key_ref {
                secret  = google_secret_manager_secret.this[env.key].secret_id
                version = "latest"
              }
            }
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.access, google_secret_manager_secret_iam_member.config]
}

resource "google_cloud_scheduler_job" "retrain" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name}-retrain"
  description      = "spendwatch: retrain the baseline model"
  schedule         = var.retrain_schedule
  time_zone        = "Etc/UTC"
  attempt_deadline = "60s"

  retry_config {
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${google_cloud_run_v2_job.retrain.name}:run"

    oauth_token {
      service_account_email = google_service_account.scheduler.email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [google_cloud_run_v2_job_iam_member.scheduler_runs_retrain]
}

resource "google_cloud_run_v2_service" "slack" {
  project             = var.project_id
  location            = var.region
  name                = "${var.name}-slack"
  labels              = local.labels
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.slack.email
    timeout         = "300s"

    scaling {
      min_instance_count = var.service_min_instances
      max_instance_count = 5
    }

    volumes {
      name = "config"
      secret {
        secret = google_secret_manager_secret.config.secret_id
        items {
          version = "latest"
          path    = "spendwatch.toml"
        }
      }
    }

    containers {
      image   = var.image
      command = ["spendwatch"]
      args    = ["serve", "--no-schedule", "--config", "/etc/spendwatch/spendwatch.toml"]

      volume_mounts {
        name       = "config"
        mount_path = "/etc/spendwatch"
      }

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "1Gi"
        }
        # The lazy listener finishes a quarantine after the 3-second acknowledgement: keep the CPU on.
        cpu_idle = false
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
      }

      dynamic "env" {
        for_each = local.plain_environment
        content {
          name  = env.key
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.service_secrets
        content {
          name = env.value.env
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.this[env.key].secret_id
              version = "latest"
            }
          }
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.access, google_secret_manager_secret_iam_member.config]
}
