variable "project_id" {
  description = "Project that hosts spendwatch (the job, the service, secrets, service accounts, alerting)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a GCP project ID (6-30 lower-case letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for Cloud Run and Cloud Scheduler, e.g. europe-west1."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region such as us-central1."
  }
}

variable "name" {
  description = "Prefix for resource names (job, service, service accounts, secrets)."
  type        = string
  default     = "spendwatch"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,17}$", var.name))
    error_message = "name must be 2-18 characters: lower-case letters, digits and hyphens, starting with a letter (service account IDs are built from it)."
  }
}

variable "image" {
  description = "The spendwatch container image (Artifact Registry), with tag or digest."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9.-]+(:[0-9]+)?/.+[:@].+$", var.image))
    error_message = "image must be a registry path with a tag or digest, e.g. europe-docker.pkg.dev/acme/spendwatch/spendwatch:1.0.0."
  }
}

variable "schedule" {
  description = "Cloud Scheduler cron expression (UTC) for scans."
  type        = string
  default     = "*/15 * * * *"

  validation {
    condition     = length(split(" ", var.schedule)) == 5
    error_message = "schedule must be a five-field cron expression."
  }
}

variable "retrain_schedule" {
  description = "Cloud Scheduler cron expression (UTC) for the daily model retraining job (spendwatch model train --config)."
  type        = string
  default     = "30 3 * * *"

  validation {
    condition     = length(split(" ", var.retrain_schedule)) == 5
    error_message = "retrain_schedule must be a five-field cron expression."
  }
}

variable "retrain_timeout_seconds" {
  description = "Timeout of the retraining job: it reads the baseline window's history (about 15 days), more than a scan."
  type        = number
  default     = 3600

  validation {
    condition     = var.retrain_timeout_seconds >= 60 && var.retrain_timeout_seconds <= 86400
    error_message = "retrain_timeout_seconds must be between 60 and 86400 (Cloud Run jobs' limit is 24 h)."
  }
}

variable "schedule_interval_minutes" {
  description = "The schedule's interval in minutes, for the no-successful-scan alert (alerts after two intervals)."
  type        = number
  default     = 15

  validation {
    condition     = var.schedule_interval_minutes >= 2 && var.schedule_interval_minutes <= 720
    error_message = "schedule_interval_minutes must be between 2 and 720."
  }
}

variable "job_cpu" {
  description = "vCPUs of the scan job."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "8"], var.job_cpu)
    error_message = "job_cpu must be 1, 2, 4 or 8."
  }
}

variable "job_memory" {
  description = "Memory of the scan job, e.g. 2Gi."
  type        = string
  default     = "2Gi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.job_memory))
    error_message = "job_memory must look like 512Mi or 2Gi."
  }
}

variable "job_timeout_seconds" {
  description = "Timeout of one scan; keep it below the schedule interval."
  type        = number
  default     = 600

  validation {
    condition     = var.job_timeout_seconds >= 60 && var.job_timeout_seconds <= 86400
    error_message = "job_timeout_seconds must be between 60 and 86400."
  }
}

variable "service_min_instances" {
  description = "Minimum instances of the Slack service. 0 costs nothing idle but a cold start may miss Slack's 3-second acknowledgement; 1 keeps one warm (see README for its cost)."
  type        = number
  default     = 0

  validation {
    condition     = var.service_min_instances >= 0 && var.service_min_instances <= 3
    error_message = "service_min_instances must be between 0 and 3."
  }
}

variable "slack_channel" {
  description = "Slack channel ID alerts go to (not a secret), e.g. C0123ALERTS."
  type        = string

  validation {
    condition     = can(regex("^[CG][A-Z0-9]{6,}$", var.slack_channel))
    error_message = "slack_channel must be a Slack channel ID such as C0123ALERTS."
  }
}

variable "environment" {
  description = "Extra environment variables for the job and the service (not for secrets)."
  type        = map(string)
  default     = {}
}

variable "use_database_url" {
  description = "The state is a PostgreSQL database whose URL you put in the <name>-database-url secret: the module creates that secret, lets the scanner and Slack service accounts access it and passes it to the jobs and the service as SPENDWATCH_DATABASE_URL (Cloud Run reads it before an instance starts, so add a version before the first run). False: no such secret, grant or variable; the state is the configuration's [serve] state (or SPENDWATCH_STATE in environment), else a file inside each container, lost when it exits: a trial only, since the jobs and the service must share state. Turning it off deletes the secret and its versions."
  type        = bool
  default     = true
}

variable "reader_scope" {
  description = "Where the custom reader role is defined and bound: \"organization\" (one role, bound on the organization) or \"project\" (one role per project in scan_project_ids, bound there)."
  type        = string
  default     = "organization"

  validation {
    condition     = contains(["organization", "project"], var.reader_scope)
    error_message = "reader_scope must be \"organization\" or \"project\"."
  }
}

variable "organization_id" {
  description = "Numeric organization ID, when reader_scope is \"organization\"."
  type        = string
  default     = null

  validation {
    condition     = var.organization_id == null || can(regex("^[0-9]+$", var.organization_id))
    error_message = "organization_id must be numeric."
  }
}

variable "scan_project_ids" {
  description = "Projects to scan, when reader_scope is \"project\"."
  type        = list(string)
  default     = []
}

variable "reader_role_id" {
  description = "ID of the custom reader role (camelCase letters, digits, dots, underscores)."
  type        = string
  default     = "spendwatchReader"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.reader_role_id))
    error_message = "reader_role_id must be 3-64 characters of letters, digits, dots and underscores."
  }
}

variable "bigquery_export_bucket" {
  description = "The bucket of [gcp.bigquery] export_uri, where BigQuery's EXPORT DATA writes the flow rows as Parquet for the scan to read back: the scanner's account gets roles/storage.objectCreator and roles/storage.objectViewer on this bucket only. Null (the default): no grant, and the rows come back page by page."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_export_bucket == null || can(regex("^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$", var.bigquery_export_bucket))
    error_message = "bigquery_export_bucket must be a bucket name (lower-case letters, digits, dots, dashes, underscores), without gs://."
  }
}

variable "enable_quarantine" {
  description = "Give the Slack service's account the generated quarantine role (roles/quarantine.json) on the reader's scope, so the Quarantine button works; false for alerts only."
  type        = bool
  default     = true
}

variable "quarantine_role_id" {
  description = "ID of the custom quarantine role (camelCase letters, digits, dots, underscores)."
  type        = string
  default     = "spendwatchQuarantine"

  validation {
    condition     = can(regex("^[a-zA-Z0-9_.]{3,64}$", var.quarantine_role_id))
    error_message = "quarantine_role_id must be 3-64 characters of letters, digits, dots and underscores."
  }
}

variable "alert_emails" {
  description = "E-mail addresses notified when a scan fails or none succeeds for two intervals."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect the Cloud Run job and service from terraform destroy."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels for every resource that takes them."
  type        = map(string)
  default     = {}
}
