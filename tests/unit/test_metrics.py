import re

from dogbreed import metrics


def test_line_round_trips_through_the_regexes():
    line = metrics.format_line(epoch=3, train_loss=0.4123, valid_loss=0.5012, valid_acc=0.8734, lr=0.000812, images_per_sec=21.4)
    assert line.startswith("epoch=3 train_loss=0.4123 ")
    for name, expected in [("epoch", 3), ("train_loss", 0.4123), ("valid_loss", 0.5012), ("valid_acc", 0.8734),
                           ("lr", 0.000812), ("images_per_sec", 21.4)]:
        assert abs(metrics.last(line, name) - expected) < 1e-6, name


def test_small_and_special_values_still_match():
    line = metrics.format_line(lr=2.5e-05, valid_loss=float("nan"))
    assert abs(metrics.last(line, "lr") - 2.5e-05) < 1e-12
    assert re.search(metrics.REGEXES["lr"], line)


def test_names_do_not_match_inside_other_names():
    text = "xvalid_loss=1.0 best_valid_loss=2.0\nvalid_loss=0.5"
    assert metrics.parse(text, "valid_loss") == [0.5]


def test_best_follows_the_objective():
    log = "epoch=1 valid_loss=0.9 valid_acc=0.5\nepoch=2 valid_loss=0.4 valid_acc=0.8\nepoch=3 valid_loss=0.6 valid_acc=0.7"
    assert metrics.best(log, "valid_loss") == 0.4
    assert metrics.best(log, "valid_acc") == 0.8
    assert metrics.best("nothing here", "valid_acc") is None


def test_metric_definitions_are_sagemaker_shaped():
    definitions = metrics.metric_definitions()
    assert {d["Name"] for d in definitions} >= {"valid_loss", "valid_acc", "test_acc", "train_loss"}
    for d in definitions:
        re.compile(d["Regex"])
        assert set(d) == {"Name", "Regex"}


def test_the_regexes_use_no_lookaround_and_read_the_printed_lines():
    line = metrics.format_line(epoch=3, train_loss=0.41, valid_loss=0.5, valid_acc=0.87, lr=0.0008, images_per_sec=21.4)
    for regex in metrics.REGEXES.values():
        assert "(?<" not in regex and "(?=" not in regex and "(?!" not in regex, regex
    assert metrics.parse(line, "valid_loss") == [0.5] and metrics.parse(line, "train_loss") == [0.41]
    assert metrics.parse(line, "epoch") == [3.0]
    assert metrics.parse("valid_loss=0.3 xvalid_loss=9 train_valid_loss=8", "valid_loss") == [0.3]
    assert metrics.parse(metrics.format_line(test_loss=0.7, test_acc=0.8), "test_acc") == [0.8]


def test_a_metric_line_is_one_write_with_its_newline(monkeypatch):
    """A log line of another process could land between a value and its newline if they were written apart (docker
    merges stdout and stderr): the regexes then read '0.18' and the log's date as one number."""
    import sys

    writes = []

    class Recording:
        def write(self, text):
            writes.append(text)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Recording())
    metrics.write_line(metrics.format_line(test_loss=0.5, test_acc=0.18))
    assert writes == ["test_loss=0.5 test_acc=0.18\n"]
