# One customer-managed key encrypts the secrets, the functions' environment, the log groups and the alarm topic.
# The secrets are created empty: put their values out of band, so they never enter Terraform state:
#   aws secretsmanager put-secret-value --secret-id <name>/slack-signing-secret --secret-string '...'

locals {
  # database-url only with use_database_url: the handlers read every secret they are given at cold start, so an
  # empty one would stop both functions from starting.
  secrets = merge(
    {
      "slack-signing-secret" = "Slack app signing secret: the Slack function verifies every request with it."
      "slack-bot-token"      = "Slack bot token (xoxb-...): posts alerts and updates messages."
    },
    var.use_database_url ? {
      "database-url" = "State database URL (postgresql://...): findings, watermarks, quarantine records and audit, shared by both functions."
    } : {}
  )
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy must name the key itself ("*"); the account root statement is AWS's default and lets IAM policies grant use.
  #checkov:skip=CKV_AWS_111:A key policy must name the key itself ("*"); writes are limited to the account's administrators through IAM.
  #checkov:skip=CKV_AWS_356:A key policy's Resource "*" means this key only.
  statement {
    sid       = "AccountAdministration"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:/aws/lambda/${var.name}-*"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsToEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "spendwatch (${var.name}): secrets, function environment, logs, alarm topic"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = local.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:Slack rotates its own signing secret and tokens; a Lambda rotator cannot, so rotation is a documented manual step.
  for_each = local.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = aws_kms_key.this.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}
