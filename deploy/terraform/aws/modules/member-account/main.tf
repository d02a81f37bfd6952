# Run once in every member account (with a provider for that account). Creates:
# - the read role: trusted only by the scanner role, with exactly the connector's read policy;
# - the quarantine role: trusted only by the Slack role, with exactly the union of the AWS actions' permissions
#   (../../policies/quarantine.json), the same document as its permissions boundary, and an explicit Deny on
#   changing spendwatch's own roles.
# - the approver role (when approver_caller_arns is set): trusted only by those callers (the Slack and scan
#   roles), with exactly spendwatch.approvals.PERMISSIONS (../../policies/approvals.json) on this account's roles
#   and users, the same allows as its permissions boundary, and the same Deny on spendwatch's own roles.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  quarantine = var.quarantine_caller_arn != null
  approver   = length(var.approver_caller_arns) > 0

  read_role_arn       = "arn:${local.partition}:iam::${local.account_id}:role/${var.read_role_name}"
  quarantine_role_arn = "arn:${local.partition}:iam::${local.account_id}:role/${var.quarantine_role_name}"
  approver_role_arn   = "arn:${local.partition}:iam::${local.account_id}:role/${var.approver_role_name}"

  quarantine_declared = jsondecode(file("${path.module}/../../policies/quarantine.json"))

  # The roles the quarantine and approver roles must never loosen or lock: themselves, the read role, and the
  # central ones.
  protected_role_arns = concat([local.read_role_arn, local.quarantine_role_arn, local.approver_role_arn], var.protected_role_arns)

  quarantine_document = {
    Version = "2012-10-17"
    Statement = concat(local.quarantine_declared.Statement, [{
      Sid      = "NeverChangeSpendwatchRoles"
      Effect   = "Deny"
      Action   = ["iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:PassRole"]
      Resource = local.protected_role_arns
    }])
  }

  # GPU-launch approvals (spendwatch/approvals.py): each generated statement narrowed by Sid to this account's
  # roles or users (a new Sid in approvals.json fails the plan here until it is given its resources).
  approvals_declared = jsondecode(file("${path.module}/../../policies/approvals.json"))
  approvals_resources = {
    SpendwatchApprovalsApplyRole  = "arn:${local.partition}:iam::${local.account_id}:role/*"
    SpendwatchApprovalsRevokeRole = "arn:${local.partition}:iam::${local.account_id}:role/*"
    SpendwatchApprovalsApplyUser  = "arn:${local.partition}:iam::${local.account_id}:user/*"
    SpendwatchApprovalsRevokeUser = "arn:${local.partition}:iam::${local.account_id}:user/*"
  }
  approver_allowed = {
    Version   = "2012-10-17"
    Statement = [for s in local.approvals_declared.Statement : merge(s, { Resource = local.approvals_resources[s.Sid] })]
  }
  approver_document = {
    Version = "2012-10-17"
    Statement = concat(local.approver_allowed.Statement, [{
      Sid      = "NeverApproveSpendwatchRoles"
      Effect   = "Deny"
      Action   = [for a in flatten(local.approvals_declared.Statement[*].Action) : a if strcontains(a, "Role")]
      Resource = local.protected_role_arns
    }])
  }

  tags = merge({ "spendwatch:managed" = "true" }, var.tags)
}

module "read_policy" {
  source = "../read-policy"

  # The read role needs no sts:AssumeRole itself; narrowed to the read roles it is inert (they trust the scanner only).
  read_role_arns  = ["arn:${local.partition}:iam::*:role/${var.read_role_name}"]
  s3_bucket_arns  = var.s3_bucket_arns
  s3_kms_key_arns = var.s3_kms_key_arns
}

data "aws_iam_policy_document" "read_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = [var.scanner_role_arn]
    }
    dynamic "condition" {
      for_each = var.external_id == null ? [] : [var.external_id]
      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [condition.value]
      }
    }
  }
}

resource "aws_iam_role" "read" {
  name                 = var.read_role_name
  description          = "spendwatch: read-only access for the scanner (${var.scanner_role_arn})"
  assume_role_policy   = data.aws_iam_policy_document.read_trust.json
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "read" {
  name   = "spendwatch-read"
  role   = aws_iam_role.read.id
  policy = module.read_policy.json
}

data "aws_iam_policy_document" "quarantine_trust" {
  count = local.quarantine ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = [var.quarantine_caller_arn]
    }
    dynamic "condition" {
      for_each = var.external_id == null ? [] : [var.external_id]
      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [condition.value]
      }
    }
  }
}

# The boundary caps the role at the declared actions even if a policy on it were widened.
resource "aws_iam_policy" "quarantine_boundary" {
  count = local.quarantine ? 1 : 0

  name        = "${var.quarantine_role_name}-boundary"
  description = "spendwatch: permissions boundary of the quarantine role (the actions' declared permissions)"
  policy      = file("${path.module}/../../policies/quarantine.json")
  tags        = local.tags
}

resource "aws_iam_role" "quarantine" {
  count = local.quarantine ? 1 : 0

  name                 = var.quarantine_role_name
  description          = "spendwatch: quarantine and release, assumed only by the Slack function (${var.quarantine_caller_arn})"
  assume_role_policy   = data.aws_iam_policy_document.quarantine_trust[0].json
  permissions_boundary = aws_iam_policy.quarantine_boundary[0].arn
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "quarantine" {
  count = local.quarantine ? 1 : 0

  name   = "spendwatch-quarantine"
  role   = aws_iam_role.quarantine[0].id
  policy = jsonencode(local.quarantine_document)
}

data "aws_iam_policy_document" "approver_trust" {
  count = local.approver ? 1 : 0

  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = var.approver_caller_arns
    }
    # No external ID: the callers are spendwatch's own roles, named exactly, and approvals.approver_session
    # passes none (an external ID guards against a third party acting for someone else).
  }
}

# The boundary caps the role at the declared approval actions on this account's principals.
resource "aws_iam_policy" "approver_boundary" {
  count = local.approver ? 1 : 0

  name        = "${var.approver_role_name}-boundary"
  description = "spendwatch: permissions boundary of the approver role (spendwatch.approvals.PERMISSIONS here)"
  policy      = jsonencode(local.approver_allowed)
  tags        = local.tags
}

resource "aws_iam_role" "approver" {
  count = local.approver ? 1 : 0

  name                 = var.approver_role_name
  description          = "spendwatch: applies and removes GPU-launch approvals, assumed only by the spendwatch functions"
  assume_role_policy   = data.aws_iam_policy_document.approver_trust[0].json
  permissions_boundary = aws_iam_policy.approver_boundary[0].arn
  max_session_duration = 3600
  tags                 = local.tags
}

resource "aws_iam_role_policy" "approver" {
  count = local.approver ? 1 : 0

  name   = "spendwatch-approvals"
  role   = aws_iam_role.approver[0].id
  policy = jsonencode(local.approver_document)
}
