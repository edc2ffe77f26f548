"""The inline SVG chart (drcheck.charts) as mail clients and PDF converters get it:
well-formed XML of basic elements with explicit sizes, points where the frame puts them,
the target as a line, every label escaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest

from drcheck.charts import frame_for, rto_chart
from drcheck.weekly import phases

NS = "{http://www.w3.org/2000/svg}"
START = datetime(2024, 1, 1, tzinfo=timezone.utc)
END = START + timedelta(days=56)
BASIC = {"svg", "title", "rect", "line", "polyline", "circle", "text"}


def parse(markup) -> ET.Element:
    return ET.fromstring(str(markup))


def test_the_chart_is_well_formed_basic_svg_with_explicit_sizes():
    svg = parse(rto_chart("SIS", [(START + timedelta(days=3), 3600.0)], 4 * 3600, START, END))
    assert svg.tag == f"{NS}svg"
    assert (svg.get("width"), svg.get("height"), svg.get("viewBox")) == ("260", "120", "0 0 260 120")
    assert {el.tag.removeprefix(NS) for el in svg.iter()} <= BASIC
    assert "class" not in svg.attrib and all(el.get("fill") or el.get("stroke") or el.tag.endswith(("title", "svg"))
                                             for el in svg.iter())  # colours are attributes, not CSS


def test_points_and_target_lie_where_the_frame_puts_them():
    points = [(START + timedelta(days=3.5), 2 * 3600.0), (START + timedelta(days=52.5), 6 * 3600.0)]
    svg = parse(rto_chart("SIS", points, 4 * 3600, START, END, width=300, height=150))
    frame = frame_for(points, 4 * 3600, START, END, 300, 150)
    assert frame.top == pytest.approx(6 * 3600 * 1.15)
    plot_w, plot_h = 300 - frame.left - frame.right, 150 - frame.above - frame.below
    dots = svg.findall(f"{NS}circle")
    for dot, (when, seconds) in zip(dots, points, strict=True):
        share = (when - START) / (END - START)
        assert float(dot.get("cx")) == pytest.approx(frame.left + share * plot_w, abs=0.01)
        assert float(dot.get("cy")) == pytest.approx(150 - frame.below - seconds / frame.top * plot_h, abs=0.01)
    assert [d.get("fill") for d in dots] == ["#1b7f3b", "#b42318"]  # within, over the 4h target
    target = svg.find(f"{NS}line[@class='target']")
    assert float(target.get("y1")) == pytest.approx(150 - frame.below - 4 * 3600 / frame.top * plot_h, abs=0.01)
    assert target.get("stroke-dasharray")
    assert svg.find(f"{NS}polyline").get("points") == " ".join(f"{d.get('cx')},{d.get('cy')}" for d in dots)
    assert svg.get("data-over") == "yes"


def test_the_target_stays_inside_the_picture_when_every_point_is_far_below_it():
    svg = parse(rto_chart("SIS", [(START + timedelta(days=10), 60.0)], 8 * 3600, START, END))
    y = float(svg.find(f"{NS}line[@class='target']").get("y1"))
    assert 20 <= y <= 102 and svg.get("data-over") == "no"


def test_a_chart_without_points_says_so():
    svg = parse(rto_chart("SIS", [], 4 * 3600, START, END))
    assert not svg.findall(f"{NS}circle") and not svg.findall(f"{NS}polyline")
    assert any(t.text == "no measured RTO" for t in svg.iter(f"{NS}text"))


def test_hostile_titles_are_escaped():
    hostile = "</svg><script>alert('x')</script> & \"q\""
    markup = str(rto_chart(hostile, [(START + timedelta(days=1), 10.0)], 20.0, START, END))
    assert "<script>" not in markup
    svg = parse(markup)
    assert svg.find(f"{NS}title").text == hostile
    assert hostile in svg.get("aria-label")
    assert not svg.findall(f".//{NS}script") and not svg.findall(".//script")


def test_phases_come_in_start_order_and_malformed_spans_are_ignored():
    details = {"timeline": {"restore": [3, 9.5], "snapshots": [0, 1], "bad": "x", "short": [1], "text": ["a", "b"]}}
    assert [(p["name"], p["seconds"]) for p in phases(details)] == [("snapshots", 1), ("restore", 6.5)]
    assert phases({"phases": {"boot": [1.0, 2.0]}})[0]["name"] == "boot"
    assert phases({}) == [] and phases({"timeline": ["not", "a", "dict"]}) == []
