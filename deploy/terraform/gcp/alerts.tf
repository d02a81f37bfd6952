# Failed runs reach people: any failed execution of the scan job, and no successful one for two intervals.

resource "google_monitoring_notification_channel" "email" {
  for_each = toset(var.alert_emails)

  project      = var.project_id
  display_name = "spendwatch alerts: ${each.value}"
  type         = "email"
  labels = {
    email_address = each.value
  }
}

resource "google_monitoring_alert_policy" "scan_failed" {
  project               = var.project_id
  display_name          = "${var.name}: scan job execution failed"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]

  conditions {
    display_name = "Failed executions of ${google_cloud_run_v2_job.scan.name}"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_job\" AND resource.labels.job_name = \"${google_cloud_run_v2_job.scan.name}\" AND metric.type = \"run.googleapis.com/job/completed_execution_count\" AND metric.labels.result = \"failed\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    content   = "A spendwatch scan failed: `gcloud run jobs executions list --job ${google_cloud_run_v2_job.scan.name} --region ${var.region}` and its logs say why."
    mime_type = "text/markdown"
  }

  user_labels = local.labels
}

resource "google_monitoring_alert_policy" "scan_heartbeat" {
  project               = var.project_id
  display_name          = "${var.name}: no successful scan"
  combiner              = "OR"
  notification_channels = [for c in google_monitoring_notification_channel.email : c.id]

  conditions {
    display_name = "No successful execution of ${google_cloud_run_v2_job.scan.name} in ${2 * var.schedule_interval_minutes} minutes"
    condition_absent {
      filter   = "resource.type = \"cloud_run_job\" AND resource.labels.job_name = \"${google_cloud_run_v2_job.scan.name}\" AND metric.type = \"run.googleapis.com/job/completed_execution_count\" AND metric.labels.result = \"succeeded\""
      duration = "${2 * var.schedule_interval_minutes * 60}s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_DELTA"
      }
    }
  }

  documentation {
    content   = "spendwatch has not completed a scan for two schedule intervals: check the Cloud Scheduler job ${google_cloud_scheduler_job.scan.name} and the job's executions."
    mime_type = "text/markdown"
  }

  user_labels = local.labels
}
