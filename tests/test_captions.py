"""The figures' captions quote measured numbers only from the JSON files the benchmark scripts write
in docs/ (figures.captions.bench_json), never typed in: the caption sources hold no measured-looking number,
and the caption helpers follow the JSON when it changes."""
import ast
import json
import re
from pathlib import Path

import pytest

from tinygrad_explain.apps import figures_resnet, figures_robust
from tinygrad_explain.apps.figures import captions, recipes

ROOT = Path(__file__).resolve().parent.parent
# a decimal (0.68), a count out of a total (13 of 20, 9/10), a percentage (95%), a count with a thousands
# separator (2,000): what a measurement -- or a setting that may change -- looks like in a caption
MEASURED = re.compile(r"\d\.\d|\b\d+ of (?:the )?\d+\b|\b\d+/\d+\b|\b\d+%|\b\d{1,3}(?:,\d{3})+\b")
#: literal numbers a caption may keep, each checked below against what the number describes
CHECKED = {"20,000": "scripts/train_decoder.py's --train-size default (the shipped decoders were fitted so)"}


def _caption_literals(module):
    """(line, text) of every string constant inside a Figure(...) caption argument and inside the
    functions named ``*caption*`` of ``module``'s source."""
    src = Path(module.__file__).read_text(encoding="utf-8")
    tree = ast.parse(src)
    roots = [n.args[2] for n in ast.walk(tree)
             if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Figure" and len(n.args) >= 3]
    roots += [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and "caption" in n.name]
    out = []
    for root in roots:
        for n in ast.walk(root):
            if isinstance(n, ast.Constant) and isinstance(n.value, str):
                out.append((n.lineno, n.value))
    return out


@pytest.mark.parametrize("module", [recipes, captions, figures_robust, figures_resnet])
def test_captions_type_in_no_measured_number(module):
    found = [(line, m.group(0), text[:60]) for line, text in _caption_literals(module)
             for m in MEASURED.finditer(text) if m.group(0) not in CHECKED]
    assert not found, f"measured-looking numbers typed into captions of {module.__name__}: {found}"


def test_the_numbers_captions_keep_are_the_codes():
    """The one number typed into a caption (the decoders' training scenes) is the script's setting."""
    src = (ROOT / "scripts" / "train_decoder.py").read_text(encoding="utf-8")
    default = re.search(r'"--train-size", type=int, default=(\d+)', src)
    assert default and f"{int(default.group(1)):,}" == "20,000"
    assert "decoder fitted on 20,000 training scenes" in Path(recipes.__file__).read_text(encoding="utf-8")


def test_caption_settings_follow_the_code(monkeypatch):
    """The settings a caption quotes are the functions' defaults: change one, the caption follows."""
    from tinygrad_explain import explain as X
    assert captions.defaults(X.smoothgrad)["samples"] == 25 and captions.percent(0.15) == "15%"
    assert captions.defaults(X.grabcut_mask)["fg_quantile"] == 0.95
    monkeypatch.setattr(X, "smoothgrad", lambda model, x, target, noise=0.2, samples=7: None)
    assert captions.defaults(X.smoothgrad) == {"noise": 0.2, "samples": 7}


def test_the_scan_finds_a_typed_in_number():
    """The check above can fail: the captions as they were (numbers typed in) are caught."""
    old = "fc6 reconstructions correlate 0.68 and 0.53 ... the judge names the scene's class for 13 of 20 each"
    assert [m.group(0) for m in MEASURED.finditer(old)] == ["0.6", "0.5", "13 of 20"]
    old = "25 noisy copies at 15% of the image's range; pixels above the 95% quantile; of 2,000 shipped scenes"
    assert [m.group(0) for m in MEASURED.finditer(old)] == ["15%", "95%", "2,000"]
    assert not MEASURED.findall("Simonyan et al. 2014, section 6, fig. 2, conv5, 4x4")


def _bench_copy(tmp_path, monkeypatch, edit):
    docs = tmp_path / "docs"
    docs.mkdir()
    for p in (ROOT / "docs").glob("bench_visualizations_*.json"):
        d = json.loads(p.read_text())
        edit(p.name, d)
        (docs / p.name).write_text(json.dumps(d))
    monkeypatch.setattr(captions, "DOCS", docs)


def test_captions_follow_the_json(tmp_path, monkeypatch):
    def edit(name, d):
        if name == "bench_visualizations_learned20.json":
            d["results"]["decoder"]["inversion"]["pool5"]["corr_original_mean"] = 0.4321
            d["results"]["exemplar"]["inversion"]["fc7"]["judge_agreement"] = 0.55
        if name == "bench_visualizations_natural20.json":
            d["results"]["natural"]["inversion"]["conv5"]["corr_original_mean"] = -0.0001
        if name == "bench_visualizations_class_robust.json":
            d["results"]["natural"]["class_models"]["recognised"] = 3
    _bench_copy(tmp_path, monkeypatch, edit)
    assert "correlate 0.43 and" in captions.decoder_caption_numbers()
    assert "for 17, 11 and 17 of 20" in captions.exemplar_caption_numbers([0.1, 0.3])
    assert "about 0.10-0.30" in captions.exemplar_caption_numbers([0.1, 0.3])
    assert "and 0.00 at conv5" in captions.layers_caption_numbers()
    assert "3/10 against 10/10" in captions.judge_caption_numbers()


def test_captions_without_the_json_point_to_the_docs(tmp_path, monkeypatch):
    monkeypatch.setattr(captions, "DOCS", tmp_path)
    for text in (captions.decoder_caption_numbers(), captions.exemplar_caption_numbers([0.2]),
                 captions.layers_caption_numbers(), captions.judge_caption_numbers()):
        assert "docs/explainers.md" in text and not re.search(r"\d\.\d\d(?!-)", text.replace("0.20-0.20", ""))


def test_readme_tables_quote_no_unchecked_number():
    """The README's tables hold no measured number (those live in docs/ beside the JSON they come from);
    its one generated table, the methods, is checked against the registry (tests/test_registry.py)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    generated = readme[readme.index("<!-- methods table"):readme.index("<!-- end of the methods table -->")]
    speed = readme[readme.index("<!-- speed table"):readme.index("<!-- end of the speed table -->")]
    rows = [line for line in readme.replace(generated, "").replace(speed, "").splitlines() if line.startswith("|")]
    assert rows, "the README has tables"
    found = [row for row in rows if MEASURED.search(row) or re.search(r"\d+(?:\.\d+)? ?%", row)]
    assert not found, f"measured numbers in README tables, not read from docs/*.json: {found}"


def speed_table(bench: dict) -> str:
    """The README's speed table, from docs/bench_cpu_graphs.json: per model and batch, the forward ratio,
    the range of the fwd+grad ratios over the three ReLU rules and the peak-memory ratio."""
    names = {"resnet50": "ResNet-50", "vgg16": "VGG16", "torchvision": "AlexNet (torchvision)"}
    out = ["| model (224 px) | batch | forward | fwd + input gradient, 3 rules | peak memory |",
           "|---|---|---|---|---|"]
    for key in dict.fromkeys((r["model"], r["batch"]) for r in bench["rows"]):
        rows = [r for r in bench["rows"] if (r["model"], r["batch"]) == key]
        fwd = next(r["ratio"] for r in rows if r["measure"] == "forward")
        grad = [r["ratio"] for r in rows if r["measure"].startswith("fwd+grad")]
        peak = next(r["peak_ratio"] for r in rows if r["peak_ratio"] is not None)
        out.append(f"| {names[key[0]]} | {key[1]} | {fwd:.2f}x | {min(grad):.2f}-{max(grad):.2f}x | {peak:.2f}x |")
    return "\n".join(out)


def test_readme_speed_table_is_the_json():
    """The README's speed table is docs/bench_cpu_graphs.json rendered (a re-run changes both or fails here)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n", readme.index("<!-- speed table")) + 1
    table = readme[start:readme.index("\n<!-- end of the speed table -->")]
    bench = json.loads((ROOT / "docs" / "bench_cpu_graphs.json").read_text(encoding="utf-8"))
    assert table == speed_table(bench)
