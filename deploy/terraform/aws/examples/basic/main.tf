# spendwatch on AWS: the scanner and Slack endpoint in a security (or management) account, and the read,
# quarantine and approver roles in two member accounts. Apply the central module first: the member roles trust
# its roles.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }
}

provider "aws" {
  region = "eu-west-1"
}

module "spendwatch" {
  source = "../.."

  image_uri                 = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/spendwatch:1.0.0"
  slack_channel             = "C0123ALERTS"
  schedule_expression       = "rate(15 minutes)"
  schedule_interval_minutes = 15
  member_account_ids        = ["111111111111", "222222222222"]
  external_id               = "spendwatch-acme"
  s3_bucket_arns            = ["arn:aws:s3:::acme-org-cloudtrail", "arn:aws:s3:::acme-cur", "arn:aws:s3:::acme-flow-logs"]
  alarm_emails              = ["platform-oncall@example.com"]
  slack_allowed_groups      = ["S0123PLATFORM"]
  config_toml               = file("${path.module}/spendwatch.toml")
  # The state's PostgreSQL URL goes in the <name>/database-url secret (fill it before the first invocation).
  use_database_url = true
  # GPU-launch approvals for the member accounts' agents, through each account's approver role.
  enable_approver_role = true
}

# One provider and one module call per member account (or a StackSet with the same three roles).
provider "aws" {
  alias  = "member_111111111111"
  region = "eu-west-1"
  assume_role {
    role_arn = "arn:aws:iam::111111111111:role/OrganizationAccountAccessRole"
  }
}

module "member_111111111111" {
  source    = "../../modules/member-account"
  providers = { aws = aws.member_111111111111 }

  scanner_role_arn      = module.spendwatch.scanner_role_arn
  quarantine_caller_arn = module.spendwatch.slack_role_arn
  approver_caller_arns  = module.spendwatch.approver_caller_arns
  external_id           = "spendwatch-acme"
}

provider "aws" {
  alias  = "member_222222222222"
  region = "eu-west-1"
  assume_role {
    role_arn = "arn:aws:iam::222222222222:role/OrganizationAccountAccessRole"
  }
}

module "member_222222222222" {
  source    = "../../modules/member-account"
  providers = { aws = aws.member_222222222222 }

  scanner_role_arn      = module.spendwatch.scanner_role_arn
  quarantine_caller_arn = module.spendwatch.slack_role_arn
  approver_caller_arns  = module.spendwatch.approver_caller_arns
  external_id           = "spendwatch-acme"
}

output "slack_request_url" {
  description = "Slack app > Interactivity > Request URL."
  value       = module.spendwatch.slack_request_url
}

output "secret_arns" {
  description = "Fill these with aws secretsmanager put-secret-value."
  value       = module.spendwatch.secret_arns
}
