"""The scene ResNet's numbers in docs/resnet.md and docs/explainers.md are the ones the scripts wrote:
docs/bench_explainers_resnet.json (scripts/bench_explainers.py --weights ...), docs/resnet_class_models.json
(the judged class models and the sample count), docs/resnet_training.json (train_resnet.py's summaries).
A number retyped by hand, or left behind when a model is replaced, fails here."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
COLUMNS = ("pointing", "pointing_hard", "mask_iou", "box_accuracy", "deletion_auc", "insertion_auc")


def load(name):
    return json.loads((DOCS / name).read_text(encoding="utf-8"))


def table_rows(text: str, header_start: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the markdown table whose header line starts with ``header_start``."""
    lines = text.splitlines()
    k = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[k + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return rows


EXPLAINERS_HEADER = "| method | pointing | pointing hard | mask IoU | box acc. | deletion | insertion |\n"


@pytest.mark.parametrize("doc, header", [("resnet.md", "| method | pointing (ResNet / AlexNet)"),
                                         ("explainers.md", EXPLAINERS_HEADER)])
def test_the_benchmark_tables_are_the_json(doc, header):
    resnet, alexnet = load("bench_explainers_resnet.json")["rows"], load("bench_explainers.json")["rows"]
    text = (DOCS / doc).read_text(encoding="utf-8")
    if doc == "explainers.md":                 # the ResNet section's table (ResNet / AlexNet cells)
        text = text[text.index("### The same on the scene ResNet"):]
        header = header.rstrip("\n")
    rows = table_rows(text, header)
    assert set(rows) == set(resnet)
    for method, cells in rows.items():
        want = [f"{resnet[method][c]:.3f} / {alexnet[method][c]:.3f}" for c in COLUMNS]
        assert cells == want, (doc, method)


def test_the_class_model_table_is_the_json():
    judged = load("resnet_class_models.json")
    rows = table_rows((DOCS / "resnet.md").read_text(encoding="utf-8"), "| seed | recognised |")
    assert set(rows) == set(judged["seeds"])
    for seed, cells in rows.items():
        r = judged["seeds"][seed]
        assert cells[0] == f"**{r['recognised']}/{r['of']}**" and cells[1] == f"{r['judge_p_target_mean']:.3f}"


def test_the_accuracy_quoted_is_the_training_summary_and_the_sample_count():
    text = (DOCS / "resnet.md").read_text(encoding="utf-8")
    training, judged = load("resnet_training.json"), load("resnet_class_models.json")
    engine = 100 * training["test_acc_10k_engine"]
    assert f"**{engine:.2f} %**" in text
    assert [round(100 * c["test_acc_10k_torch"], 2) for c in training["cycles"]][-1] == round(engine, 2)
    quoted = [float(v) for v in re.findall(r"(\d+\.\d+) % \((?:5 epochs|7|17|25)\)", text)]
    assert quoted == [round(100 * c["test_acc_10k_torch"], 2) for c in training["cycles"]]
    n, k = judged["sample_n"], judged["sample_correct"]
    assert f"{100 * k / n:.1f} % ({k};" in text


def test_the_sample_count_is_what_the_model_test_expects():
    """tests/test_resnet_model.py's SAMPLE_CORRECT is the count in the JSON (both describe the shipped file)."""
    src = (ROOT / "tests" / "test_resnet_model.py").read_text(encoding="utf-8")
    assert f"SAMPLE_CORRECT = {load('resnet_class_models.json')['sample_correct']}\n" in src
