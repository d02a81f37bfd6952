-- A Slack click, an action and the CLI find "the finding about this resource" by cloud and resource or
-- principal (Store.finding_for_resource); without these indexes every lookup read the whole findings table.
CREATE INDEX findings_resource ON findings (cloud, resource);
CREATE INDEX findings_principal ON findings (cloud, principal);
