# The two functions, their schedule and the Slack endpoint. Identities are in iam.tf, secrets and the key in
# secrets.tf, alarms in alarms.tf.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  is_image   = var.package_type == "Image"
  in_vpc     = length(var.vpc_subnet_ids) > 0

  scan_function_name  = "${var.name}-scheduled-scan"
  slack_function_name = "${var.name}-slack-interaction"

  # The entry points in spendwatch/lambda_handlers.py.
  scan_handler  = "spendwatch.lambda_handlers.scan_handler"
  slack_handler = "spendwatch.lambda_handlers.slack_handler"

  # Secrets are passed by name, never by value: the handlers read `<NAME>_SSM_PARAMETER` once per cold start
  # with ssm:GetParameter(WithDecryption), and Parameter Store's /aws/reference/secretsmanager/ path returns the
  # Secrets Manager secret. No value is in Terraform state.
  secret_reference = { for k, s in aws_secretsmanager_secret.this : k => "/aws/reference/secretsmanager/${s.name}" }

  # SPENDWATCH_DATABASE_URL_SSM_PARAMETER is read at every cold start: set only when the database-url secret
  # exists (use_database_url).
  common_environment = merge(
    var.environment,
    {
      SPENDWATCH_SLACK_CHANNEL           = var.slack_channel
      SLACK_BOT_TOKEN_SSM_PARAMETER      = local.secret_reference["slack-bot-token"]
      SLACK_SIGNING_SECRET_SSM_PARAMETER = local.secret_reference["slack-signing-secret"]
      SPENDWATCH_CONFIG_TOML             = var.config_toml
      # The read role's name and external ID belong in config_toml's [aws] table (role_name, external_id).
      # The Slack function is to assume this role in the finding's account before it acts (see README).
      SPENDWATCH_AWS_QUARANTINE_ROLE_NAME = var.quarantine_role_name
    },
    # The quarantine role's trust requires the external ID when the member-account module was given one.
    var.external_id == null ? {} : { SPENDWATCH_AWS_EXTERNAL_ID = var.external_id },
    # Both functions: the Slack function applies approvals through this role, the scan function's sweep revokes.
    local.approver_role ? { SPENDWATCH_AWS_APPROVER_ROLE_NAME = var.approver_role_name } : {},
    var.use_database_url ? { SPENDWATCH_DATABASE_URL_SSM_PARAMETER = local.secret_reference["database-url"] } : {},
    var.state_path == null ? {} : { SPENDWATCH_STATE = var.state_path }
  )

  tags = merge({ "spendwatch:managed" = "true" }, var.tags)
}

resource "aws_cloudwatch_log_group" "scan" {
  name              = "/aws/lambda/${local.scan_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

resource "aws_cloudwatch_log_group" "slack" {
  name              = "/aws/lambda/${local.slack_function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.this.arn
  tags              = local.tags
}

# Failed asynchronous invocations (scheduler deliveries, the Slack lazy listener) land here instead of vanishing.
resource "aws_sqs_queue" "failed" {
  name                      = "${var.name}-failed-invocations"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = local.tags
}

resource "aws_lambda_function" "scan" {
  #checkov:skip=CKV_AWS_272:Code signing applies to Zip packages from a signing profile; images are pinned by digest in ECR instead.
  function_name = local.scan_function_name
  description   = "spendwatch: scheduled scan (${local.scan_handler})"
  role          = aws_iam_role.scan.arn
  package_type  = var.package_type
  image_uri     = local.is_image ? var.image_uri : null
  s3_bucket     = local.is_image ? null : var.zip_s3_bucket
  s3_key        = local.is_image ? null : var.zip_s3_key
  handler       = local.is_image ? null : local.scan_handler
  runtime       = local.is_image ? null : var.runtime
  architectures = [var.architecture]
  memory_size   = var.scan_memory_mb
  timeout       = var.scan_timeout_seconds
  kms_key_arn   = aws_kms_key.this.arn

  # One scan at a time: a run still going when the next is due makes the next one wait for the schedule after.
  reserved_concurrent_executions = 1

  dynamic "image_config" {
    for_each = local.is_image ? [1] : []
    content {
      # The image's own ENTRYPOINT is the spendwatch CLI; Lambda needs the runtime interface client instead.
      entry_point = ["python", "-m", "awslambdaric"]
      command     = [local.scan_handler]
    }
  }

  environment {
    variables = local.common_environment
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.failed.arn
  }

  tracing_config {
    mode = var.tracing_mode
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  lifecycle {
    precondition {
      condition     = local.is_image ? var.image_uri != null : (var.zip_s3_bucket != null && var.zip_s3_key != null)
      error_message = "Set image_uri for package_type \"Image\", or zip_s3_bucket and zip_s3_key for \"Zip\"."
    }
  }

  depends_on = [aws_cloudwatch_log_group.scan, aws_iam_role_policy.scan_runtime]
  tags       = local.tags
}

resource "aws_lambda_function" "slack" {
  #checkov:skip=CKV_AWS_272:Code signing applies to Zip packages from a signing profile; images are pinned by digest in ECR instead.
  function_name = local.slack_function_name
  description   = "spendwatch: Slack interactions behind a Function URL (${local.slack_handler})"
  role          = aws_iam_role.slack.arn
  package_type  = var.package_type
  image_uri     = local.is_image ? var.image_uri : null
  s3_bucket     = local.is_image ? null : var.zip_s3_bucket
  s3_key        = local.is_image ? null : var.zip_s3_key
  handler       = local.is_image ? null : local.slack_handler
  runtime       = local.is_image ? null : var.runtime
  architectures = [var.architecture]
  memory_size   = var.slack_memory_mb
  timeout       = var.slack_timeout_seconds
  kms_key_arn   = aws_kms_key.this.arn

  # Caps what a flood of (signed or unsigned) requests can cost; clicks are rare.
  reserved_concurrent_executions = 10

  dynamic "image_config" {
    for_each = local.is_image ? [1] : []
    content {
      entry_point = ["python", "-m", "awslambdaric"]
      command     = [local.slack_handler]
    }
  }

  environment {
    variables = merge(local.common_environment, {
      SPENDWATCH_SLACK_ALLOWED_USERS  = join(",", var.slack_allowed_users)
      SPENDWATCH_SLACK_ALLOWED_GROUPS = join(",", var.slack_allowed_groups)
    })
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.failed.arn
  }

  tracing_config {
    mode = var.tracing_mode
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []
    content {
      subnet_ids         = var.vpc_subnet_ids
      security_group_ids = var.vpc_security_group_ids
    }
  }

  depends_on = [aws_cloudwatch_log_group.slack, aws_iam_role_policy.slack_runtime]
  tags       = local.tags
}

# No retries: the next scheduled scan resumes from the watermarks, and a quarantine must not run twice unasked.
resource "aws_lambda_function_event_invoke_config" "scan" {
  function_name          = aws_lambda_function.scan.function_name
  maximum_retry_attempts = 0
}

resource "aws_lambda_function_event_invoke_config" "slack" {
  function_name          = aws_lambda_function.slack.function_name
  maximum_retry_attempts = 0
}

# Slack cannot sign in to AWS; it signs each request with the signing secret and the handler verifies it.
resource "aws_lambda_function_url" "slack" {
  #checkov:skip=CKV_AWS_258:Slack cannot sign AWS requests; it signs each request with the app's signing secret, which the handler verifies (and rejects stale timestamps) before doing anything.
  function_name      = aws_lambda_function.slack.function_name
  authorization_type = "NONE"
}

resource "aws_lambda_permission" "slack_url" {
  #checkov:skip=CKV_AWS_301:The Slack endpoint must be reachable by Slack; every request is verified against the signing secret by the handler.
  statement_id           = "AllowPublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.slack.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

resource "aws_scheduler_schedule" "scan" {
  #checkov:skip=CKV_AWS_297:The schedule's only payload is a constant marker ({"source":"spendwatch.schedule"}); AWS-owned encryption is enough and a CMK here would need the key granted to Scheduler.
  name                         = "${var.name}-scan"
  description                  = "spendwatch: run a scan"
  schedule_expression          = var.schedule_expression
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.scan.arn
    role_arn = aws_iam_role.scheduler.arn
    input    = jsonencode({ source = "spendwatch.schedule" })

    retry_policy {
      maximum_retry_attempts = 0
    }

    dead_letter_config {
      arn = aws_sqs_queue.failed.arn
    }
  }
}

# Daily model retraining: scans read incrementally and hold too little history to retrain the baseline model
# themselves (spendwatch/model_cli.py). The same function, with {"action": "retrain"}, runs model_cli.retrain
# over the live clouds' history and keeps the model with the state. With reserved concurrency 1 a retrain due
# while a scan runs is throttled and retried by Lambda's asynchronous queue until the scan is done.
resource "aws_scheduler_schedule" "retrain" {
  #checkov:skip=CKV_AWS_297:The schedule's only payload is a constant ({"action":"retrain"}); AWS-owned encryption is enough and a CMK here would need the key granted to Scheduler.
  count = var.retrain_schedule_expression == null ? 0 : 1

  name                         = "${var.name}-retrain"
  description                  = "spendwatch: retrain the baseline model"
  schedule_expression          = var.retrain_schedule_expression
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = aws_lambda_function.scan.arn
    role_arn = aws_iam_role.scheduler.arn
    input    = jsonencode({ source = "spendwatch.schedule", action = "retrain" })

    retry_policy {
      maximum_retry_attempts = 0
    }

    dead_letter_config {
      arn = aws_sqs_queue.failed.arn
    }
  }
}
