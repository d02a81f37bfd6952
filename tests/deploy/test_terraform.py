"""The Terraform modules, checked without a terraform binary: every file parses, each module has what a
reader needs (versions, typed and described variables, an example, a README with costs), and the IAM
resources load the generated policy files instead of listing permissions by hand."""

from __future__ import annotations

import json
import re
from importlib import import_module
from pathlib import Path
from typing import Any

import pytest

from .tfkit import GENERATED, MODULES, TF, blocks, file_references, load, locals_of, strings, tf_files

AWS = TF / "aws"
MEMBER = AWS / "modules" / "member-account"
READ_POLICY = AWS / "modules" / "read-policy"


def test_there_are_terraform_files() -> None:
    assert len(tf_files()) >= 25


@pytest.mark.parametrize("path", tf_files(), ids=lambda p: str(p.relative_to(TF)))
def test_every_terraform_file_parses(path: Path) -> None:
    assert load(path), f"{path} is empty"


def test_a_parse_error_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tf"
    broken.write_text('resource "aws_s3_bucket" "b" {\n  bucket = \n')
    with pytest.raises(AssertionError, match=r"broken\.tf"):
        load(broken)


@pytest.mark.parametrize("module", MODULES)
def test_module_has_versions_variables_outputs_example_and_readme(module: str) -> None:
    root = TF / module
    for name in ("versions.tf", "variables.tf", "main.tf", "outputs.tf", "README.md", "examples/basic/main.tf"):
        assert (root / name).is_file(), f"{module}/{name} missing"


def _module_dirs() -> list[Path]:
    return sorted({p.parent for p in tf_files() if "examples" not in p.parts})


@pytest.mark.parametrize("root", _module_dirs(), ids=lambda p: str(p.relative_to(TF)))
def test_providers_are_pinned(root: Path) -> None:
    versions = load(root / "versions.tf")
    (terraform,) = versions["terraform"]
    assert terraform["required_version"].startswith(">=")
    providers = {k: v for entry in terraform.get("required_providers", []) for k, v in entry.items()
                 if not k.startswith("__")}
    used = {t.split("_")[0] for p in root.glob("*.tf") for kind in ("resource", "data")
            for t in blocks(load(p), kind)}
    assert used <= set(providers) | {"terraform"}, f"{root}: providers used but not pinned: {used - set(providers)}"
    for name, spec in providers.items():
        assert spec["source"].startswith("hashicorp/"), (root, name)
        assert re.fullmatch(r"~> \d+\.\d+", spec["version"]), (root, name, spec["version"])


@pytest.mark.parametrize("root", _module_dirs(), ids=lambda p: str(p.relative_to(TF)))
def test_variables_are_typed_and_described(root: Path) -> None:
    for name, body in blocks(load(root / "variables.tf"), "variable").items():
        assert body.get("type"), f"{root.name}: variable {name} has no type"
        assert len(body.get("description", "")) > 10, f"{root.name}: variable {name} has no description"


@pytest.mark.parametrize("root", _module_dirs(), ids=lambda p: str(p.relative_to(TF)))
def test_outputs_are_described(root: Path) -> None:
    for name, body in blocks(load(root / "outputs.tf"), "output").items():
        assert body.get("description"), f"{root.name}: output {name} has no description"


@pytest.mark.parametrize("module", MODULES)
def test_example_uses_the_module(module: str) -> None:
    example = TF / module / "examples" / "basic" / "main.tf"
    calls = blocks(load(example), "module")
    assert calls["spendwatch"]["source"] == "../..", calls
    for call in calls.values():  # every module an example calls exists
        assert (example.parent / call["source"]).resolve().is_dir(), call["source"]


@pytest.mark.parametrize("module", MODULES)
def test_readme_says_what_it_creates_and_costs(module: str) -> None:
    text = (TF / module / "README.md").read_text()
    assert re.search(r"^## What it creates", text, re.M), module
    cost = re.search(r"^## What it costs.*?(?=^## |\Z)", text, re.M | re.S)
    assert cost, f"{module}/README.md has no '## What it costs' section"
    section = cost.group(0)
    assert "list price" in section.lower(), "state that the prices are list prices at the time of writing"
    assert re.search(r"15[- ]minute", section) and "assum" in section.lower(), "state the assumptions"
    assert section.count("$") >= 5 and "|" in section, "an itemised table of prices"


def test_gcp_and_azure_readmes_describe_the_quarantine_identity() -> None:
    for module, role in (("gcp", "spendwatchQuarantine"), ("azure", "spendwatch quarantine")):
        text = (TF / module / "README.md").read_text()
        assert "do not exist yet" not in text.lower(), module
        assert role in text and "roles/quarantine.json" in text and "enable_quarantine" in text, module


# The wiring: which resource loads which generated file.

def test_every_generated_file_is_loaded_by_the_terraform() -> None:
    referenced = {ref for path in tf_files() for ref in file_references(path)}
    for ref in referenced:
        assert ref.is_file(), f"a .tf file reads {ref}, which does not exist"
    for key, path in GENERATED.items():
        assert path.resolve() in referenced, f"no .tf file loads {path.relative_to(TF)} ({key})"


def test_read_policy_module_takes_its_actions_from_read_json() -> None:
    assert file_references(READ_POLICY / "main.tf") == {GENERATED["read"].resolve()}
    doc = load(READ_POLICY / "main.tf")
    local = locals_of(doc)
    assert local["declared"] == '${jsondecode(file("${path.module}/../../policies/read.json"))}'
    assert local["statements"] == "${local.declared.Statement}"
    # Only Resources are narrowed: every Action comes from a declared statement, except kms:Decrypt on the
    # buckets' keys, which is opt-in (s3_kms_key_arns).
    statement_expr = local["document"]["Statement"]
    action_lists = re.findall(r"Action = \[([^\]]*)\]", statement_expr)
    literal = [a for a in action_lists if not a.startswith("for a in s.Action : a if ")]
    assert literal == ['"kms:Decrypt"'], action_lists
    assert '"Allow"' in statement_expr and '"Deny"' not in statement_expr
    # The statements the module narrows by Sid exist in the declared policy.
    declared_sids = {s["Sid"] for s in json.loads(GENERATED["read"].read_text())["Statement"]}
    named = set(re.findall(r'"(SpendwatchRead[A-Za-z0-9]*)"', statement_expr))
    assert {"SpendwatchReadSts", "SpendwatchReadS3"} <= declared_sids
    assert named - declared_sids == {"SpendwatchReadS3Buckets", "SpendwatchReadS3Objects", "SpendwatchReadS3Kms"}
    outputs = blocks(load(READ_POLICY / "outputs.tf"), "output")
    assert outputs["json"]["value"] == "${jsonencode(local.document)}"


def test_scanner_and_member_read_roles_get_the_read_policy() -> None:
    root = {k: v for p in AWS.glob("*.tf") for k, v in blocks(load(p), "resource").items()}
    modules = {k: v for p in AWS.glob("*.tf") for k, v in blocks(load(p), "module").items()}
    assert modules["read_policy"]["source"] == "./modules/read-policy"
    assert root["aws_iam_role_policy.scan_read"]["policy"] == "${module.read_policy.json}"
    assert root["aws_iam_role_policy.scan_read"]["role"] == "${aws_iam_role.scan.id}"
    member = blocks(load(MEMBER / "main.tf"), "resource")
    assert blocks(load(MEMBER / "main.tf"), "module")["read_policy"]["source"] == "../read-policy"
    assert member["aws_iam_role_policy.read"]["policy"] == "${module.read_policy.json}"
    assert member["aws_iam_role_policy.read"]["role"] == "${aws_iam_role.read.id}"
    # The read role's only policy; trusted by the scanner role alone.
    attached = [k for k, v in member.items() if k.startswith("aws_iam_role_") and "aws_iam_role.read." in str(v)]
    assert attached == ["aws_iam_role_policy.read"], attached
    trust = blocks(load(MEMBER / "main.tf"), "data")["aws_iam_policy_document.read_trust"]
    assert "${var.scanner_role_arn}" in strings(trust)


def test_quarantine_role_gets_exactly_the_quarantine_policy_and_boundary() -> None:
    doc = load(MEMBER / "main.tf")
    local = locals_of(doc)
    member = blocks(doc, "resource")
    assert local["quarantine_declared"] == '${jsondecode(file("${path.module}/../../policies/quarantine.json"))}'
    # The inline policy is the declared document plus Deny statements only: nothing more is allowed.
    statement_expr = local["quarantine_document"]["Statement"]
    assert statement_expr.startswith("${concat(local.quarantine_declared.Statement, [")
    extra = statement_expr[len("${concat(local.quarantine_declared.Statement, "):]
    assert 'Effect = "Deny"' in extra and '"Allow"' not in extra, extra
    policy = member["aws_iam_role_policy.quarantine"]
    assert policy["policy"] == "${jsonencode(local.quarantine_document)}"
    assert policy["role"] == "${aws_iam_role.quarantine[0].id}"
    boundary = member["aws_iam_policy.quarantine_boundary"]
    assert boundary["policy"] == '${file("${path.module}/../../policies/quarantine.json")}'
    role = member["aws_iam_role.quarantine"]
    assert role["permissions_boundary"] == "${aws_iam_policy.quarantine_boundary[0].arn}"
    attached = [k for k, v in member.items()
                if k.startswith("aws_iam_role_") and "aws_iam_role.quarantine[0]" in str(v)]
    assert attached == ["aws_iam_role_policy.quarantine"], attached
    trust = blocks(doc, "data")["aws_iam_policy_document.quarantine_trust"]
    principals = [p for s in trust["statement"] for p in s["principals"]]
    assert [(p["type"], p["identifiers"]) for p in principals] == [("AWS", ["${var.quarantine_caller_arn}"])]


def test_only_the_slack_role_assumes_the_quarantine_role() -> None:
    iam = load(AWS / "iam.tf")
    this_account = blocks(iam, "module")["this_account"]
    assert this_account["quarantine_caller_arn"] == "${var.enable_quarantine ? aws_iam_role.slack.arn : null}"
    scan_runtime = blocks(iam, "data")["aws_iam_policy_document.scan_runtime"]
    assert "sts:AssumeRole" not in strings(scan_runtime)
    assert "quarantine" not in json.dumps(scan_runtime)


def test_gcp_reader_role_takes_its_permissions_from_reader_json() -> None:
    iam = load(TF / "gcp" / "iam.tf")
    assert locals_of(iam)["reader"] == '${jsondecode(file("${path.module}/roles/reader.json"))}'
    resources = blocks(iam, "resource")
    for name in ("google_organization_iam_custom_role.reader", "google_project_iam_custom_role.reader"):
        assert resources[name]["permissions"] == "${local.reader.includedPermissions}", name
    # Bound to the scanner's service account only.
    for name in ("google_organization_iam_member.reader", "google_project_iam_member.reader"):
        assert resources[name]["member"] == "serviceAccount:${google_service_account.scanner.email}", name


def test_gcp_export_bucket_grants_write_on_that_bucket_only_and_only_when_set() -> None:
    """EXPORT DATA's write permission is a bucket grant behind bigquery_export_bucket, never in the reader role."""
    permissions = import_module("spendwatch.connectors.gcp.permissions")
    iam = load(TF / "gcp" / "iam.tf")
    resources = blocks(iam, "resource")
    grants = {k: v for k, v in resources.items() if k.startswith("google_storage_bucket_iam_member.")}
    assert {v["role"] for v in grants.values()} == {"roles/storage.objectCreator", "roles/storage.objectViewer"}
    for name, body in grants.items():
        assert body["bucket"] == "${var.bigquery_export_bucket}", name
        assert body["count"] == "${var.bigquery_export_bucket == null ? 0 : 1}", name
        assert body["member"] == "serviceAccount:${google_service_account.scanner.email}", name
    assert set(permissions.BUCKET_CALLS.values()) == {"storage.objects.create"}
    assert not set(permissions.BUCKET_CALLS.values()) & set(permissions.permissions())
    variables = blocks(load(TF / "gcp" / "variables.tf"), "variable")
    assert variables["bigquery_export_bucket"]["default"] is None


def test_azure_reader_role_takes_its_actions_from_reader_json() -> None:
    iam = load(TF / "azure" / "iam.tf")
    assert locals_of(iam)["reader"] == '${jsondecode(file("${path.module}/roles/reader.json"))}'
    role = blocks(iam, "resource")["azurerm_role_definition.reader"]
    (permissions,) = role["permissions"]
    assert permissions["actions"] == "${local.reader.Actions}"
    assert permissions["not_actions"] == "${local.reader.NotActions}"
    assert permissions["data_actions"] == "${local.reader.DataActions}"
    assert permissions["not_data_actions"] == "${local.reader.NotDataActions}"
    assignment = blocks(iam, "resource")["azurerm_role_assignment.reader"]
    assert assignment["principal_id"] == "${azurerm_user_assigned_identity.scanner.principal_id}"


def test_gcp_quarantine_role_takes_its_permissions_from_quarantine_json_and_only_slack_holds_it() -> None:
    iam = load(TF / "gcp" / "iam.tf")
    assert locals_of(iam)["quarantine"] == '${jsondecode(file("${path.module}/roles/quarantine.json"))}'
    resources = blocks(iam, "resource")
    for name in ("google_organization_iam_custom_role.quarantine", "google_project_iam_custom_role.quarantine"):
        assert resources[name]["permissions"] == "${local.quarantine.includedPermissions}", name
        assert "var.enable_quarantine" in str(resources[name].get("count", resources[name].get("for_each"))), name
    members = {k: v for k, v in resources.items() if k.startswith(("google_organization_iam_member.",
                                                                    "google_project_iam_member."))}
    # A binding grants the quarantine role by naming it, or by iterating over the quarantine roles.
    quarantine = {k: v for k, v in members.items() if "quarantine" in str(v["role"]) + str(v.get("for_each"))}
    assert set(quarantine) == {"google_organization_iam_member.quarantine", "google_project_iam_member.quarantine"}
    for name, body in quarantine.items():
        assert body["member"] == "serviceAccount:${google_service_account.slack.email}", name
    # The Slack service runs as that account; the scan job does not.
    main = blocks(load(TF / "gcp" / "main.tf"), "resource")
    (service_template,) = main["google_cloud_run_v2_service.slack"]["template"]
    assert service_template["service_account"] == "${google_service_account.slack.email}"
    assert "google_service_account.slack" not in json.dumps(main["google_cloud_run_v2_job.scan"])


def test_azure_quarantine_role_takes_its_actions_from_quarantine_json_and_only_slack_holds_it() -> None:
    iam = load(TF / "azure" / "iam.tf")
    assert locals_of(iam)["quarantine"] == '${jsondecode(file("${path.module}/roles/quarantine.json"))}'
    resources = blocks(iam, "resource")
    role = resources["azurerm_role_definition.quarantine"]
    (permissions,) = role["permissions"]
    assert permissions["actions"] == "${local.quarantine.Actions}"
    assert permissions["not_actions"] == "${local.quarantine.NotActions}"
    assert permissions["data_actions"] == "${local.quarantine.DataActions}"
    assert permissions["not_data_actions"] == "${local.quarantine.NotDataActions}"
    assert role["assignable_scopes"] == "${local.scopes}"
    assignments = {k: v for k, v in resources.items() if k.startswith("azurerm_role_assignment.")
                   and "quarantine" in str(v["role_definition_id"])}
    assert list(assignments) == ["azurerm_role_assignment.quarantine"]
    assert assignments["azurerm_role_assignment.quarantine"]["principal_id"] == \
        "${azurerm_user_assigned_identity.slack.principal_id}"
    main = blocks(load(TF / "azure" / "main.tf"), "resource")
    (identity,) = main["azurerm_container_app.slack"]["identity"]
    assert identity["identity_ids"] == ["${azurerm_user_assigned_identity.slack.id}"]
    assert "user_assigned_identity.slack" not in json.dumps(main["azurerm_container_app_job.scan"])


def test_no_secret_value_in_terraform() -> None:
    # Secrets are created empty (AWS, GCP) or with a placeholder Terraform then ignores (Azure).
    for path in tf_files():
        resources = blocks(load(path), "resource")
        assert not any(k.startswith(("aws_secretsmanager_secret_version.", "google_secret_manager_secret_version."))
                       for k in resources), path
        for key, body in resources.items():
            if key.startswith("azurerm_key_vault_secret."):
                assert body["value"] == "set-out-of-band"
                assert "value" in str(body["lifecycle"]), "Terraform must ignore the value set out of band"


def test_entry_points_exist_in_the_code() -> None:
    import importlib

    handlers = importlib.import_module("spendwatch.lambda_handlers")
    named = re.findall(r'"spendwatch\.lambda_handlers\.(\w+)"', (AWS / "main.tf").read_text())
    assert len(named) == 2, named
    for name in named:
        assert callable(getattr(handlers, name, None)), f"aws/main.tf names spendwatch.lambda_handlers.{name}"


@pytest.mark.parametrize("module", ["gcp", "azure"])
def test_containers_run_serve_once_model_train_and_serve_no_schedule(module: str) -> None:
    # The job scans (--once); the Slack service must not: with scans of its own its /healthz turns 503 when
    # they are overdue, and an instance scaled to zero runs none. The retrain job trains the model daily.
    args = [json.loads(a) for a in re.findall(r"args\s+= (\[.*\])", (TF / module / "main.tf").read_text())]
    assert [a[:2] for a in args] == [["serve", "--once"], ["model", "train"], ["serve", "--no-schedule"]], args
    assert all("--config" in a for a in args), args


# Daily model retraining outside the long-running serve (spendwatch/model_cli.py).

def test_aws_retrain_schedule_invokes_the_scan_function_with_the_retrain_event() -> None:
    resources = blocks(load(AWS / "main.tf"), "resource")
    scan, retrain = resources["aws_scheduler_schedule.scan"], resources["aws_scheduler_schedule.retrain"]
    (target,) = retrain["target"]
    assert target["arn"] == "${aws_lambda_function.scan.arn}"
    assert target["role_arn"] == scan["target"][0]["role_arn"] == "${aws_iam_role.scheduler.arn}"
    assert target["input"] == '${jsonencode({source = "spendwatch.schedule", action = "retrain"})}'
    assert target["dead_letter_config"] == scan["target"][0]["dead_letter_config"]
    assert "action" not in scan["target"][0]["input"]  # the scan schedule still scans
    assert retrain["schedule_expression"] == "${var.retrain_schedule_expression}"
    assert retrain["count"] == "${var.retrain_schedule_expression == null ? 0 : 1}"
    variable = blocks(load(AWS / "variables.tf"), "variable")["retrain_schedule_expression"]
    assert variable["default"] == "cron(30 3 * * ? *)"  # daily
    # The handler the schedule invokes dispatches on that field (tests/serve/test_lambda_retrain.py runs it).
    import inspect

    from spendwatch import lambda_handlers

    assert 'action == "retrain"' in inspect.getsource(lambda_handlers.scan_handler)


def test_gcp_retrain_job_and_its_trigger() -> None:
    main = blocks(load(TF / "gcp" / "main.tf"), "resource")
    scan, retrain = main["google_cloud_run_v2_job.scan"], main["google_cloud_run_v2_job.retrain"]
    (scan_task,), (task,) = scan["template"][0]["template"], retrain["template"][0]["template"]
    (container,) = task["containers"]
    assert container["args"] == ["model", "train", "--config", "/etc/spendwatch/spendwatch.toml"]
    # Same identity, configuration and secrets as the scan job; its own timeout.
    assert task["service_account"] == scan_task["service_account"] == "${google_service_account.scanner.email}"
    assert task["volumes"] == scan_task["volumes"]
    assert container["dynamic"] == scan_task["containers"][0]["dynamic"]  # plain and secret env
    assert task["timeout"] == "${var.retrain_timeout_seconds}s"
    trigger = main["google_cloud_scheduler_job.retrain"]
    assert trigger["schedule"] == "${var.retrain_schedule}"
    assert trigger["http_target"][0]["uri"].endswith("/jobs/${google_cloud_run_v2_job.retrain.name}:run")
    gcp_iam = blocks(load(TF / "gcp" / "iam.tf"), "resource")
    invoker = gcp_iam["google_cloud_run_v2_job_iam_member.scheduler_runs_retrain"]
    assert invoker["name"] == "${google_cloud_run_v2_job.retrain.name}" and invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == "serviceAccount:${google_service_account.scheduler.email}"
    assert blocks(load(TF / "gcp" / "variables.tf"), "variable")["retrain_schedule"]["default"] == "30 3 * * *"


def test_azure_retrain_job_is_scheduled_daily_like_the_scan_job() -> None:
    main = blocks(load(TF / "azure" / "main.tf"), "resource")
    scan, retrain = main["azurerm_container_app_job.scan"], main["azurerm_container_app_job.retrain"]
    (container,) = retrain["template"][0]["container"]
    assert container["args"] == ["model", "train", "--config", "/etc/spendwatch/spendwatch-toml"]
    assert retrain["schedule_trigger_config"][0]["cron_expression"] == "${var.retrain_schedule}"
    assert retrain["replica_timeout_in_seconds"] == "${var.retrain_timeout_seconds}"
    for key in ("identity", "dynamic", "container_app_environment_id"):  # dynamic: the secrets
        assert retrain[key] == scan[key], key
    assert container["dynamic"] == scan["template"][0]["container"][0]["dynamic"]  # plain and secret env
    assert blocks(load(TF / "azure" / "variables.tf"), "variable")["retrain_schedule"]["default"] == "30 3 * * *"


# GPU-launch approvals (spendwatch/approvals.py): the Slack function applies, the scan function's sweep revokes.

def test_approvals_policy_is_loaded_and_narrowed_to_this_accounts_principals() -> None:
    iam = load(AWS / "iam.tf")
    local = locals_of(iam)
    assert local["approvals_declared"] == '${jsondecode(file("${path.module}/policies/approvals.json"))}'
    # Every generated statement gets resources by Sid: this account's roles or users, never "*".
    sids = {s["Sid"] for s in json.loads(GENERATED["approvals"].read_text())["Statement"]}
    resources = local["approvals_resources"]
    assert set(resources) == sids
    for sid, arn in resources.items():
        kind = "role" if sid.endswith("Role") else "user"
        assert arn == f"arn:${{local.partition}}:iam::${{local.account_id}}:{kind}/*", (sid, arn)
    # Only the declared Allow statements plus one Deny keeping approvals off spendwatch's own roles.
    deny = local["approvals_deny_own_roles"]
    assert deny["Effect"] == "Deny" and deny["Resource"] == "${local.approvals_protected_role_arns}"
    protected = local["approvals_protected_role_arns"]
    for role in ("aws_iam_role.scan.arn", "aws_iam_role.slack.arn", "aws_iam_role.scheduler.arn",
                 "var.read_role_name", "var.quarantine_role_name"):
        assert role in protected, role
    narrowed = "[for s in local.approvals_declared.Statement : merge(s, {Resource = local.approvals_resources[s.Sid]})"
    slack, scan = local["approvals_slack_document"]["Statement"], local["approvals_scan_document"]["Statement"]
    assert slack == "${concat(" + narrowed + "], [local.approvals_deny_own_roles])}"
    # The sweep (approvals.expire_due) only deletes the policy and removes the tags.
    assert scan == "${concat(" + narrowed + ' if startswith(s.Sid, "SpendwatchApprovalsRevoke")], ' \
        "[local.approvals_deny_own_roles])}"
    assert {s for s in sids if s.startswith("SpendwatchApprovalsRevoke")} == {
        "SpendwatchApprovalsRevokeRole", "SpendwatchApprovalsRevokeUser"}


def test_approvals_policy_goes_to_the_slack_and_scan_roles_behind_enable_approvals() -> None:
    resources = {k: v for p in AWS.glob("*.tf") for k, v in blocks(load(p), "resource").items()}
    slack, scan = resources["aws_iam_role_policy.slack_approvals"], resources["aws_iam_role_policy.scan_approvals"]
    assert slack["role"] == "${aws_iam_role.slack.id}"
    assert slack["policy"] == "${jsonencode(local.approvals_slack_document)}"
    assert scan["role"] == "${aws_iam_role.scan.id}"
    assert scan["policy"] == "${jsonencode(local.approvals_scan_document)}"
    # Direct IAM permissions only while approvals do not go through the approver roles (enable_approver_role).
    assert slack["count"] == scan["count"] == "${local.approvals_direct ? 1 : 0}"
    local = locals_of(load(AWS / "iam.tf"))
    assert local["approvals_direct"] == "${var.enable_approvals && !var.enable_approver_role}"
    attaching = sorted(k for k, v in resources.items() if "approvals_" in json.dumps(v.get("policy", "")))
    assert attaching == ["aws_iam_role_policy.scan_approvals", "aws_iam_role_policy.slack_approvals"]
    variable = blocks(load(AWS / "variables.tf"), "variable")["enable_approvals"]
    assert variable["type"] == "bool" and variable["default"] is True


def _approvals_statements(resources: dict[str, str]) -> list[dict[str, Any]]:
    """What `[for s in approvals_declared.Statement : merge(s, {Resource = resources[s.Sid]})]` evaluates to."""
    declared = json.loads(GENERATED["approvals"].read_text())["Statement"]
    return [{**s, "Resource": resources[s["Sid"]]} for s in declared]


def test_member_approver_role_gets_exactly_the_approvals_permissions_on_its_accounts_principals() -> None:
    from spendwatch import approvals

    doc = load(MEMBER / "main.tf")
    local = locals_of(doc)
    member = blocks(doc, "resource")
    assert local["approvals_declared"] == '${jsondecode(file("${path.module}/../../policies/approvals.json"))}'
    narrowed = ("${[for s in local.approvals_declared.Statement : "
                "merge(s, {Resource = local.approvals_resources[s.Sid]})]}")
    assert local["approver_allowed"] == {"Version": "2012-10-17", "Statement": narrowed}
    # Evaluated: exactly approvals.PERMISSIONS, each on this account's roles or users, held to the two tags.
    statements = _approvals_statements(local["approvals_resources"])
    assert {a for s in statements for a in s["Action"]} == set(approvals.PERMISSIONS)
    for s in statements:
        assert s["Effect"] == "Allow", s
        kind = "role" if all("Role" in a for a in s["Action"]) else "user"
        assert all(("Role" in a) == (kind == "role") for a in s["Action"]), s
        assert s["Resource"] == f"arn:${{local.partition}}:iam::${{local.account_id}}:{kind}/*", s
    # The inline policy is those statements plus one Deny on spendwatch's own roles, the approver role included.
    statement_expr = local["approver_document"]["Statement"]
    assert statement_expr.startswith("${concat(local.approver_allowed.Statement, [")
    extra = statement_expr[len("${concat(local.approver_allowed.Statement, "):]
    assert 'Effect = "Deny"' in extra and '"Allow"' not in extra and "Resource = local.protected_role_arns" in extra
    assert "local.approver_role_arn" in local["protected_role_arns"]
    assert local["approver_role_arn"] == \
        "arn:${local.partition}:iam::${local.account_id}:role/${var.approver_role_name}"
    policy, boundary, role = (member["aws_iam_role_policy.approver"], member["aws_iam_policy.approver_boundary"],
                              member["aws_iam_role.approver"])
    assert policy["policy"] == "${jsonencode(local.approver_document)}"
    assert policy["role"] == "${aws_iam_role.approver[0].id}"
    assert boundary["policy"] == "${jsonencode(local.approver_allowed)}"
    assert role["permissions_boundary"] == "${aws_iam_policy.approver_boundary[0].arn}"
    assert role["max_session_duration"] == 3600 and role["tags"] == boundary["tags"] == "${local.tags}"
    assert role["name"] == "${var.approver_role_name}"
    attached = [k for k, v in member.items() if k.startswith("aws_iam_role_") and "aws_iam_role.approver[0]" in str(v)]
    assert attached == ["aws_iam_role_policy.approver"], attached
    # Optional: created only for the callers given, and trusted by them alone.
    assert local["approver"] == "${length(var.approver_caller_arns) > 0}"
    for body in (policy, boundary, role):
        assert body["count"] == "${local.approver ? 1 : 0}"
    trust = blocks(doc, "data")["aws_iam_policy_document.approver_trust"]
    principals = [p for s in trust["statement"] for p in s["principals"]]
    assert [(p["type"], p["identifiers"]) for p in principals] == [("AWS", "${var.approver_caller_arns}")]
    assert [a for s in trust["statement"] for a in s["actions"]] == ["sts:AssumeRole"]
    variables = blocks(load(MEMBER / "variables.tf"), "variable")
    assert variables["approver_caller_arns"]["default"] == []
    assert variables["approver_role_name"]["default"] == approvals.DEFAULT_APPROVER_ROLE
    outputs = blocks(load(MEMBER / "outputs.tf"), "output")
    assert outputs["approver_role_arn"]["value"] == "${local.approver ? aws_iam_role.approver[0].arn : null}"


def test_only_the_spendwatch_functions_assume_the_approver_role_and_only_when_enabled() -> None:
    from spendwatch import approvals

    iam = load(AWS / "iam.tf")
    local = locals_of(iam)
    resources = {k: v for p in AWS.glob("*.tf") for k, v in blocks(load(p), "resource").items()}
    assert local["approver_role"] == "${var.enable_approvals && var.enable_approver_role}"
    assert local["approver_role_arns"] == \
        '${[for a in local.role_accounts : "arn:${local.partition}:iam::${a}:role/${var.approver_role_name}"]}'
    assume = blocks(iam, "data")["aws_iam_policy_document.assume_approver"]
    assert [(s["actions"], s["resources"]) for s in assume["statement"]] == [
        (["sts:AssumeRole"], "${local.approver_role_arns}")]
    holders = {k: v for k, v in resources.items() if "assume_approver" in json.dumps(v.get("policy", ""))}
    assert {k: (v["role"], v["count"]) for k, v in holders.items()} == {
        "aws_iam_role_policy.slack_approver": ("${aws_iam_role.slack.id}", "${local.approver_role ? 1 : 0}"),
        "aws_iam_role_policy.scan_approver": ("${aws_iam_role.scan.id}", "${local.approver_role ? 1 : 0}"),
    }
    # This account's approver role (scan_this_account) trusts the same two functions.
    this_account = blocks(iam, "module")["this_account"]
    assert this_account["approver_caller_arns"] == \
        "${local.approver_role ? [aws_iam_role.slack.arn, aws_iam_role.scan.arn] : []}"
    assert this_account["approver_role_name"] == "${var.approver_role_name}"
    outputs = blocks(load(AWS / "outputs.tf"), "output")
    assert outputs["approver_caller_arns"]["value"] == this_account["approver_caller_arns"]
    # Both functions get the role's name, under the variable the code reads, only when enabled.
    environment = locals_of(load(AWS / "main.tf"))["common_environment"]
    assert f"local.approver_role ? {{{approvals.APPROVER_ROLE_ENV} = var.approver_role_name}} : {{}}" in environment
    # The quarantine role's trust requires the external ID when one is set: the Slack function must send it.
    assert "var.external_id == null ? {} : {SPENDWATCH_AWS_EXTERNAL_ID = var.external_id}" in environment
    variables = blocks(load(AWS / "variables.tf"), "variable")
    assert variables["enable_approver_role"]["type"] == "bool" and variables["enable_approver_role"]["default"] is False
    assert variables["approver_role_name"]["default"] == approvals.DEFAULT_APPROVER_ROLE


def test_athena_policy_is_loaded_narrowed_by_sid_and_given_to_the_scan_role_only_when_configured() -> None:
    """[aws.athena]: the generated statements, each narrowed to the workgroup, the Glue table, the table's bucket
    or the results bucket; attached to the scan role (scans and retrains) only when var.athena is set."""
    local = locals_of(load(AWS / "iam.tf"))
    assert local["athena_declared"] == '${jsondecode(file("${path.module}/policies/athena.json"))}'
    sids = {s["Sid"] for s in json.loads(GENERATED["athena"].read_text())["Statement"]}
    resources = local["athena_resources"]
    assert resources.startswith("${var.athena == null ? {} : {") and '"*"' not in resources
    for sid in sids:
        assert f"{sid} = [" in resources, sid
    assert re.findall(r"(SpendwatchAthena\w+) = \[", resources) == sorted(sids, key=resources.index)
    for fragment in (":workgroup/${var.athena.workgroup}", ":table/${var.athena.database}/${var.athena.table}",
                     '"${var.athena.table_bucket_arn}/*"', '"${var.athena.results_bucket_arn}/*"'):
        assert fragment in resources, fragment
    # [aws.athena] cur_table (CUR 2.0 reduced in Athena): its Glue table and the export's bucket, each optional
    for fragment in (":table/${local.athena_cur_db}/${var.athena.cur_table}", '"${var.athena.cur_bucket_arn}/*"',
                     "var.athena.table == null ? null", "var.athena.cur_table == null ? null"):
        assert fragment in resources, fragment
    assert local["athena_document"]["Statement"] == \
        "${[for s in local.athena_declared.Statement : merge(s, {Resource = local.athena_resources[s.Sid]})]}"
    policies = {k: v for p in AWS.glob("*.tf") for k, v in blocks(load(p), "resource").items()
                if "athena" in json.dumps(v.get("policy", ""))}
    assert list(policies) == ["aws_iam_role_policy.scan_athena"]
    scan = policies["aws_iam_role_policy.scan_athena"]
    assert scan["role"] == "${aws_iam_role.scan.id}" and scan["policy"] == (
        "${var.athena.role_arn == null ? jsonencode(local.athena_document) : "
        "jsonencode(local.athena_assume_document)}")
    # [aws.athena] role_arn: the queries run as a role elsewhere; the scan role may only assume that one role
    assume = local["athena_assume_document"]["Statement"][0]
    assert assume["Action"] == ["sts:AssumeRole"] and "var.athena.role_arn" in json.dumps(assume["Resource"])
    assert scan["count"] == "${var.athena == null ? 0 : 1}"
    variable = blocks(load(AWS / "variables.tf"), "variable")["athena"]
    assert variable["default"] is None
    for key in ("table", "table_bucket_arn", "cur_table", "cur_database", "cur_bucket_arn", "role_arn"):
        assert f"{key} = optional(string)" in variable["type"], key
    # What the connector calls is what the policy allows.
    declared = {a for s in json.loads(GENERATED["athena"].read_text())["Statement"] for a in s["Action"]}
    assert set(import_module("spendwatch.connectors.aws.permissions").ATHENA_CALLS.values()) <= declared


def test_aws_database_url_secret_and_its_parameter_only_with_use_database_url() -> None:
    # The handlers read every *_SSM_PARAMETER they are given at cold start: an empty secret they were pointed at
    # would stop both functions from starting, so the secret, its grants and the variable exist only on request.
    variables = blocks(load(AWS / "variables.tf"), "variable")
    assert variables["use_database_url"]["type"] == "bool" and variables["use_database_url"]["default"] is False
    env = locals_of(load(AWS / "main.tf"))["common_environment"]
    assert env.count("SPENDWATCH_DATABASE_URL_SSM_PARAMETER") == 1
    assert ('var.use_database_url ? {SPENDWATCH_DATABASE_URL_SSM_PARAMETER = local.secret_reference["database-url"]}'
            ' : {}') in env
    secrets = locals_of(load(AWS / "secrets.tf"))["secrets"]
    assert 'var.use_database_url ? {"database-url" = ' in secrets
    # Nothing else names the secret: the IAM grants iterate over the secrets that exist.
    expressions = [s for p in AWS.glob("*.tf") for s in strings(load(p)) if s.startswith("${")]
    naming = [s for s in expressions if "database-url" in s]
    assert naming and all("var.use_database_url ?" in s for s in naming), naming
    iam = blocks(load(AWS / "iam.tf"), "data")
    for name in ("aws_iam_policy_document.scan_runtime", "aws_iam_policy_document.slack_runtime"):
        granted = [s["resources"] for s in iam[name]["statement"] if s.get("sid", "").startswith("Secrets")]
        assert len(granted) == 2 and all("local.secret_arns[k]" in str(g) or "secret_reference[k]" in str(g)
                                         for g in granted), (name, granted)
    assert 'k != "slack-signing-secret"' in locals_of(load(AWS / "iam.tf"))["scan_secrets"]  # scan: no signing secret
    # The example deploys the recommended shape: a PostgreSQL state through the secret.
    example = blocks(load(AWS / "examples" / "basic" / "main.tf"), "module")["spendwatch"]
    assert example["use_database_url"] is True


def test_aws_state_path_says_it_takes_a_url_and_wins_over_the_secret() -> None:
    state_path = blocks(load(AWS / "variables.tf"), "variable")["state_path"]
    assert "postgresql:// URL" in state_path["description"] and "wins over the database-url secret" in \
        state_path["description"]
    env = locals_of(load(AWS / "main.tf"))["common_environment"]
    assert "var.state_path == null ? {} : {SPENDWATCH_STATE = var.state_path}" in env
    # the order the handlers resolve it in (spendwatch.store.resolve_state): SPENDWATCH_STATE first
    from spendwatch.store import resolve_state

    assert resolve_state(None, environ={"SPENDWATCH_STATE": "/mnt/efs/state.db",
                                        "SPENDWATCH_DATABASE_URL": "postgresql://db/x"}) == Path("/mnt/efs/state.db")


# The database-url secret on GCP and Azure, behind use_database_url as on AWS. Unset, a GCP secret without a
# version stops Cloud Run from starting the jobs and the service (it resolves secret env vars before an instance
# starts), and an Azure secret still holding its placeholder stops every command (resolve_state puts
# SPENDWATCH_DATABASE_URL before the configuration's [serve] state and refuses one that is not a postgresql:// URL).

SECRET_RESOURCE = {"gcp": "google_secret_manager_secret.this[", "azure": "azurerm_key_vault_secret.this["}
SECRET_MAPS = {"gcp": ("secrets", "job_secrets", "service_secrets"),
               "azure": ("secrets", "job_secrets", "app_secrets", "secret_grants")}


def _secret_references(node: object, for_each: str | None = None) -> list[tuple[str | None, str]]:
    """(the nearest enclosing for_each, the expression) for every expression that indexes the secret resources,
    and every Azure `secret_name` (a container's env naming one of the app's secrets)."""
    if isinstance(node, dict):
        for_each = node.get("for_each", for_each)
        named = [(for_each, node["secret_name"])] if "secret_name" in node else []
        return named + [r for v in node.values() for r in _secret_references(v, for_each)]
    if isinstance(node, list):
        return [r for v in node for r in _secret_references(v, for_each)]
    return [(for_each, node)] if isinstance(node, str) and any(s in node for s in SECRET_RESOURCE.values()) else []


def _without_descriptions(node: object) -> object:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description" and not k.startswith("__")}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


@pytest.mark.parametrize("module", ["gcp", "azure"])
def test_gcp_and_azure_database_url_secret_only_with_use_database_url(module: str) -> None:
    root = TF / module
    variable = blocks(load(root / "variables.tf"), "variable")["use_database_url"]
    # Default true: the job(s) and the service/app always run apart and need one shared state, which these modules
    # offer only through this secret; and a default of false would delete deployed secrets on the next apply.
    assert variable["type"] == "bool" and variable["default"] is True
    assert "SPENDWATCH_DATABASE_URL" in variable["description"] and "[serve] state" in variable["description"]
    secrets = locals_of(load(root / "secrets.tf"))["secrets"]
    assert ('var.use_database_url ? {"database-url" = {env = "SPENDWATCH_DATABASE_URL", readers = ["scanner", '
            '"slack"]}} : {}') in secrets, secrets
    # Nothing else names the secret or its variable (a literal env block included; descriptions and comments are
    # prose): the secret, the grants and the mounts iterate over the map.
    values = [s for p in root.glob("*.tf") for s in strings(_without_descriptions(load(p)))]
    assert [s for s in values if "database-url" in s or "SPENDWATCH_DATABASE_URL" in s] == [secrets]
    exprs = {**locals_of(load(root / "secrets.tf")), **locals_of(load(root / "main.tf"))}
    for name in ("secret_grants", "job_secrets", "service_secrets" if module == "gcp" else "app_secrets"):
        assert re.match(r"\$\{\{?(merge\(\[)?for \w+, s in local\.secrets :", exprs[name]), (name, exprs[name])
    references = [r for p in root.glob("*.tf") for r in _secret_references(load(p))]
    # The grants, and the secrets of both jobs and the service/app (Azure: as app secrets, then as env).
    assert len(references) == {"gcp": 4, "azure": 7}[module], references
    for for_each, expr in references:
        assert for_each and re.fullmatch(r"\$\{.*local\.(secrets|secret_grants|job_secrets|service_secrets|"
                                         r"app_secrets)\b.*\}", for_each), (for_each, expr)
    assert blocks(load(root / "secrets.tf"), "resource")[SECRET_RESOURCE[module][:-1]]["for_each"] == "${local.secrets}"
    # The example deploys the recommended shape: a PostgreSQL state through the secret.
    example = blocks(load(root / "examples" / "basic" / "main.tf"), "module")["spendwatch"]
    assert example["use_database_url"] is True


def _secret_maps(module: str, use_database_url: bool, work: Path) -> dict[str, dict[str, object]]:
    """The module's secret maps as Terraform itself computes them, by `terraform console` on a root holding only
    those locals: they name no resource, so no provider is needed (none can be downloaded here)."""
    import shutil
    import subprocess

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary: the static wiring test above still runs")
    exprs = {**locals_of(load(TF / module / "secrets.tf")), **locals_of(load(TF / module / "main.tf"))}
    work.mkdir()
    body = "\n".join(f"  {name} = {exprs[name][2:-1]}" for name in SECRET_MAPS[module])
    (work / "main.tf").write_text(f'variable "use_database_url" {{\n  type = bool\n}}\n\nlocals {{\n{body}\n}}\n')
    (work / "cli.tfrc").write_text("")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "CHECKPOINT_DISABLE": "1",
           "TF_CLI_CONFIG_FILE": str(work / "cli.tfrc")}
    query = "jsonencode({" + ", ".join(f"{n} = local.{n}" for n in SECRET_MAPS[module]) + "})"
    done = subprocess.run([terraform, "console", f"-var=use_database_url={str(use_database_url).lower()}"],
                          input=query, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    maps: dict[str, dict[str, object]] = json.loads(json.loads(done.stdout))
    return maps


@pytest.mark.parametrize("module", ["gcp", "azure"])
def test_gcp_and_azure_secret_maps_with_and_without_use_database_url(module: str, tmp_path: Path) -> None:
    on, off = _secret_maps(module, True, tmp_path / "on"), _secret_maps(module, False, tmp_path / "off")
    mounted = "service_secrets" if module == "gcp" else "app_secrets"
    url = {"env": "SPENDWATCH_DATABASE_URL", "readers": ["scanner", "slack"]}
    assert on["secrets"]["database-url"] == on["job_secrets"]["database-url"] == on[mounted]["database-url"] == url
    for name in SECRET_MAPS[module]:
        assert not [k for k in off[name] if k.startswith("database-url")], (name, off[name])
        # Only the database URL goes: the Slack secrets (and Azure's configuration) stay as they were.
        assert off[name] == {k: v for k, v in on[name].items() if not k.startswith("database-url")}, name
    assert off["secrets"] and "slack-bot-token" in off["job_secrets"] and "slack-signing-secret" in off[mounted]
    assert "slack-signing-secret" not in off["job_secrets"]  # the scanner never reads the signing secret
    if module == "azure":
        assert {"database-url/scanner", "database-url/slack"} <= set(on["secret_grants"])
