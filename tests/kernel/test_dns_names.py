"""The query name as a label (dns.name_label), capped by dns.max_names, and names longer than
the classifier keeps: still counted, cut and marked, in the label and in events."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.dns.codes import CUT_MARK
from tests.support.dnsmasq import Dnsmasq
from tests.support.exporter_process import Exporter
from tests.support.namespaces import Hosts, make_host_link, require_root
from tests.support.scrapes import Samples, wait_for

LOOKUP = "dns_lookup_duration_seconds_count"
MAX_NAMES = 3
# 4 labels of 50 bytes and "test": 211 bytes in wire format, past the 128 the classifier keeps.
LONG = ".".join(c * 50 for c in "wxyz") + ".test"


@pytest.fixture(scope="module")
def link() -> Iterator[Hosts]:
    require_root()
    yield from make_host_link("d3", 87)


def by_name(s: Samples) -> Counter[str]:
    found: Counter[str] = Counter()
    for (name, labels), v in s.items():
        if name == LOOKUP and v:
            found[dict(labels)["dns_question_name"]] += int(v)
    return found


def test_names_are_labels_up_to_the_cap_and_long_ones_are_cut_and_marked(link: Hosts) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            Dnsmasq(link.server_ns, (link.server_v4,)) as resolver:
        events = Path(tmp) / "dns.jsonl"
        exporter = Exporter({"interfaces": [link.interface],
                             "dns": {"name_label": True, "max_names": MAX_NAMES,
                                     "events": {"output": str(events)}}})
        try:
            # A name in another case is the same label (lower case), though the kernel keeps it
            # apart (it takes a place of the cap); the resolver answers in the case asked.
            asked = ["web.test", "WEB.test", LONG, "a.test", "b.test", "c.test", "web.test"]
            for name in asked:
                subprocess.run(["dig", "+tries=1", f"@{link.server_v4}", name, "A"],
                               capture_output=True, timeout=30, check=True)
            assert sum(resolver.answers().values()) == len(asked)
            cut = "w" * 50 + "." + "x" * 50 + "." + "y" * 25 + CUT_MARK  # 128 wire bytes
            want = Counter({"web.test": 3, cut: 1, "other": 3})
            s = wait_for(exporter.scrape, lambda s: by_name(s) == want)
            assert by_name(s) == want
            records = [json.loads(line) for line in events.read_text().splitlines()]
            assert [r["dns_question_name"] for r in records] == [
                "web.test", "web.test", cut, "a.test", "b.test", "c.test", "web.test"]
        finally:
            assert exporter.stop() == 0, exporter.log()
