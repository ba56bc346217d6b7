"""The compressed-domain report touches only its own block of docs/results.md."""
from __future__ import annotations

from jedi_train.compressed.report import BEGIN, END, verdict, write_block


def test_write_block_creates_replaces_and_keeps_the_rest(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    write_block(doc, f"{BEGIN}\nfirst\n{END}")
    assert doc.read_text() == f"{BEGIN}\nfirst\n{END}\n"
    other = "# Results\n\n<!-- jedi:begin -->\nanother tool's table\n<!-- jedi:end -->\n"
    doc.write_text(other + "\n" + doc.read_text() + "\ntrailing words\n")
    write_block(doc, f"{BEGIN}\nsecond\n{END}")
    text = doc.read_text()
    assert text.startswith(other) and text.endswith("\ntrailing words\n")
    assert "second" in text and "first" not in text and text.count(BEGIN) == 1
    plain = tmp_path / "plain.md"
    plain.write_text("# Results\nsomething\n")
    write_block(plain, f"{BEGIN}\nx\n{END}")
    assert plain.read_text() == f"# Results\nsomething\n\n{BEGIN}\nx\n{END}\n"


def test_verdict_pairs_by_seed_and_compares_with_the_spread():
    assert verdict([50, 52, 48], [60, 61, 59]) == "PKD better"
    assert verdict([50, 52, 48], [51, 53, 47]) == "within spread"
    assert verdict([50, 70, 30], [55, 75, 35]) == "PKD better"  # paired: the seeds' own levels cancel
    assert verdict([50, 50, 50], [51, 60, 51]) == "within spread"  # one sign, but mean 4 < std 5.2
    assert verdict([60, 61, 59], [50, 52, 48]) == "CE better"
