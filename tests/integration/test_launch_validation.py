"""The validation table through the command: what AWS rejects (and moto takes) ends as one line and a
non-zero exit, before anything is created; the neighbouring valid request goes through."""

from __future__ import annotations

import pytest

from tests.integration.conftest import REGION

ROLE = "arn:aws:iam::123456789012:role/dogbreed-sagemaker"
IMAGES = '''train_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-train:abc123"
serve_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/dogbreed-serve:abc123"
'''


def _config(tmp_path, extra: str = "", role: str = ROLE) -> str:
    path = tmp_path / "dogbreed.toml"
    path.write_text(f'region = "{REGION}"\nrole = "{role}"\nbucket = "dogbreed-test"\nprefix = "runs"\n{IMAGES}{extra}\n')
    return str(path)


def _created(sm) -> dict:
    return {"training": sm.list_training_jobs()["TrainingJobSummaries"],
            "tuning": sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"],
            "models": sm.list_models()["Models"], "endpoint configs": sm.list_endpoint_configs()["EndpointConfigs"],
            "endpoints": sm.list_endpoints()["Endpoints"]}


VPC = 'vpc = { subnets = ["subnet-0123456789abcdef0"], security_group_ids = ["sg-0123456789abcdef0"] }'
MODEL = ["--model-data", "s3://dogbreed-test/runs/models/j/output/model.tar.gz"]

# (row id, argv after the verb's --config, extra config TOML, role, what the one line must say)
REFUSED = [
    ("train: job name outside the policy", ["train", "--detach", "--strict-policy", "--job-name", "mnist-1"], "", ROLE,
     'iam/dogbreed-launcher-policy.json line 16: "Resource": "arn:aws:sagemaker:REGION:ACCOUNT:*/dogbreed*"'),
    ("train: job name of 64 characters", ["train", "--detach", "--job-name", "dogbreed-" + "x" * 55], "", ROLE,
     "has 64 characters; AWS takes at most 63"),
    ("train: role the policy may not pass", ["train", "--detach", "--strict-policy"], "", "arn:aws:iam::123456789012:role/other",
     "iam/dogbreed-launcher-policy.json line 22"),
    ("train: spot max_wait below max_run", ["train", "--detach"], "[training]\nmax_run_s = 7200\nmax_wait_s = 3600", ROLE,
     "training.max_wait_s (3600) must be at least training.max_run_s (7200) with spot"),
    ("train: resume from a local folder", ["train", "--detach", "--resume-from", "/tmp/checkpoints"], "", ROLE,
     "--resume-from '/tmp/checkpoints' is not an S3 URI"),
    ("tune: hyperband with early stopping Auto", ["tune", "--detach", "--strategy", "Hyperband"], "", ROLE,
     'set tuning.early_stopping = "Off"'),
    ("tune: grid with a continuous range", ["tune", "--detach", "--strategy", "Grid"], "", ROLE,
     "Grid takes only categorical ranges (values = [...]); lr is min/max"),
    ("tune: name of 33 characters", ["tune", "--detach", "--job-name", "dogbreed-hpo-" + "x" * 20], "", ROLE,
     "has 33 characters; AWS takes at most 32"),
    ("deploy: serverless with data capture", ["deploy", "--detach", "--serverless", "--data-capture", *MODEL], "", ROLE,
     "serverless endpoints take no data capture"),
    ("deploy: serverless in a VPC", ["deploy", "--detach", "--serverless", *MODEL], VPC, ROLE,
     "serverless endpoints take no VPC or network isolation"),
    ("deploy: serverless with network isolation", ["deploy", "--detach", "--serverless", *MODEL], "network_isolation = true",
     ROLE, "serverless endpoints take no VPC or network isolation"),
    ("train: network isolation, ImageNet weights downloaded", ["train", "--detach"], "network_isolation = true", ROLE,
     "network_isolation: the training container cannot download the ImageNet weights"),
    ("deploy: endpoint outside the policy", ["deploy", "--detach", "--strict-policy", "--endpoint-name", "prod", *MODEL],
     "", ROLE,
     "endpoint name 'prod' is outside what the launcher policy grants (iam/dogbreed-launcher-policy.json line 16"),
]

# the valid neighbours of the rows above: (row id, argv, extra config TOML, what was created)
ACCEPTED = [
    ("train: spot max_wait equal to max_run", ["train", "--detach", "--job-name", "dogbreed-train-equal"],
     "[training]\nmax_run_s = 7200\nmax_wait_s = 7200", "training"),
    ("train: resume from S3", ["train", "--detach", "--resume-from", "s3://dogbreed-test/runs/checkpoints/x/"], "", "training"),
    ("tune: hyperband with early stopping Off", ["tune", "--detach", "--strategy", "Hyperband", "--early-stopping", "Off"], "",
     "tuning"),
    ("tune: grid with categorical ranges", ["tune", "--detach", "--strategy", "Grid"],
     '[tuning.ranges]\nbatch-size = { values = [32, 64] }', "tuning"),
    ("deploy: serverless without data capture", ["deploy", "--detach", "--serverless", *MODEL], "", "endpoints"),
    ("deploy: instances in a VPC with network isolation", ["deploy", "--detach", *MODEL], VPC + "\nnetwork_isolation = true",
     "endpoints"),
    ("train: network isolation, ImageNet weights as a channel",
     ["train", "--detach", "--pretrained", "s3://dogbreed-test/weights/resnet50.pth"], "network_isolation = true", "training"),
    ("train: network isolation, no pretrained weights", ["train", "--detach", "--hp", "pretrained-weights=none"],
     "network_isolation = true", "training"),
]


def _cli(argv, capsys) -> tuple[int, str, str]:
    from dogbreed import cli

    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    captured = capsys.readouterr()
    return done.value.code, captured.out, captured.err


@pytest.mark.parametrize("row,argv,extra,role,needle", REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_in_one_line_before_any_call(aws, tmp_path, capsys, row, argv, extra, role, needle):
    verb, *rest = argv
    code, out, err = _cli([verb, "--config", _config(tmp_path, extra, role), *rest], capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("dogbreed: error: ") and needle in lines[0], err
    assert not any(_created(aws).values()), _created(aws)


@pytest.mark.parametrize("row,argv,extra,created", ACCEPTED, ids=[r[0] for r in ACCEPTED])
def test_the_valid_neighbours_go_through(aws, tmp_path, capsys, row, argv, extra, created):
    verb, *rest = argv
    code, out, err = _cli([verb, "--config", _config(tmp_path, extra), *rest], capsys)
    assert code == 0, err
    assert _created(aws)[created]


def test_hyperband_request_carries_early_stopping_off(aws, tmp_path, capsys):
    code, out, err = _cli(["tune", "--config", _config(tmp_path), "--detach", "--strategy", "Hyperband",
                           "--early-stopping", "Off",
                           "--job-name", "dogbreed-hpo-hyperband"], capsys)
    assert code == 0, err
    described = aws.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="dogbreed-hpo-hyperband")
    config = described["HyperParameterTuningJobConfig"]
    assert (config["Strategy"], config["TrainingJobEarlyStoppingType"]) == ("Hyperband", "Off")
