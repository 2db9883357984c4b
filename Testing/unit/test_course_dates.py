"""A prior course's date is its last fraction: a date its own RTPLAN says the course cannot have ended by is warned
when a time-based recovery model depends on it (pipeline.priorCourseDateWarning)."""

from __future__ import annotations

import datetime as dt
import json
import types

import pydicom

from ReirradiationDoseLib.core import casefile, pipeline
from ReirradiationDoseLib.core.casefile import CourseSpec
from ReirradiationDoseLib.core.radiobiology import FractionSchedule


def _case(demoCase, name: str, priorDate: str | None = None, constantRecovery: bool = False):
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["registration"] = "truth/prior_registration.nrrd"
    data["mri"]["registration"] = "none"
    if priorDate is not None:
        data["courses"][0]["date"] = priorDate
    if constantRecovery:
        for tissue in data["tissues"].values():
            if "recovery" in tissue:
                tissue["recovery"] = {"model": "constant", "fraction": 0.25}
    path = demoCase.paths["case"].parent / f"case_dates_{name}.json"
    path.write_text(json.dumps(data))
    return casefile.parseCaseFile(path)


def _dateWarnings(inputs) -> list[str]:
    return [w for w in inputs.warnings if "LAST fraction" in w]


def test_a_prior_course_dated_by_its_plan_is_warned_when_recovery_depends_on_the_interval(demoCase):
    """The demo's prior course ends 39 days after its plan (a week's wait, 25 fractions Monday to Friday): no
    warning. Dated by its RTPLAN instead, the interval is 32 days too long at least (25 fractions span 32 days)
    and the sacral plexus (Nieder-Doi) and bladder (Price) depend on it: warned, naming the course, both dates and
    the days. With constant recovery only, the interval changes nothing: not warned."""
    plan = pydicom.dcmread(demoCase.paths["case"].parent / "prior" / "RTPLAN.dcm", stop_before_pixels=True)
    planDate = dt.datetime.strptime(plan.RTPlanDate, "%Y%m%d").date()
    case = _case(demoCase, "generator")
    assert (case.courses[0].date - planDate).days == 39
    assert _dateWarnings(pipeline.loadCaseInputs(case)) == []

    warned = _dateWarnings(pipeline.loadCaseInputs(_case(demoCase, "plan", planDate.isoformat())))
    assert len(warned) == 1
    end = planDate + dt.timedelta(days=32)
    assert warned[0].startswith(f"course 'prior' is dated {planDate.isoformat()}, but its RTPLAN (RTPLAN.dcm) is "
                                f"dated {planDate.isoformat()} and its 25 fractions on five days a week end on "
                                f"{end.isoformat()} at the earliest")
    assert "too long by at least 32 days" in warned[0]

    assert _dateWarnings(pipeline.loadCaseInputs(_case(demoCase, "constant", planDate.isoformat(), True))) == []


def test_the_shortest_course_a_plan_allows():
    """25 fractions once a day: 24 days after the first fraction plus 4 weekends; twice a day: 13 treatment days,
    12 + 2 weekends; one fraction: the plan's day itself. The current course is never checked (its date is its
    start)."""
    plan = types.SimpleNamespace(date="20240102")

    def warning(fractions, date, perDay=1, hours=None, current=False):
        course = CourseSpec(name="prior", dose=None, plan="p/RTPLAN.dcm", date=date, isCurrent=current,
                            schedule=FractionSchedule(perDay, hours))
        return pipeline.priorCourseDateWarning(course, plan, fractions)

    assert warning(25, dt.date(2024, 2, 3)) is None
    assert "end on 2024-02-03 at the earliest" in warning(25, dt.date(2024, 2, 2))
    assert "too long by at least 1 day," in warning(25, dt.date(2024, 2, 2))
    assert warning(25, dt.date(2024, 1, 18), perDay=2, hours=6.0) is None
    assert "end on 2024-01-18" in warning(25, dt.date(2024, 1, 17), perDay=2, hours=6.0)
    assert warning(1, dt.date(2024, 1, 2)) is None
    assert "too long by at least 1 day," in warning(1, dt.date(2024, 1, 1))
    assert warning(25, dt.date(2024, 1, 2), current=True) is None
    assert pipeline.priorCourseDateWarning(
        CourseSpec(name="prior", dose=None, date=dt.date(2024, 1, 2)), types.SimpleNamespace(date=""), 25) is None


def test_a_prior_courses_dates_too_close_for_its_fractions_are_warned():
    """'startDate' and 'date' are a prior course's first and last fractions: 25 fractions once a day on weekdays take
    32 days at least (24 weekdays after the first, 4 weekends), twice a day 16 (13 treatment days); closer dates are
    warned naming both, a longer course (a break) is not. No start date, or the current course: nothing to check."""
    def warning(start, perDay=1, fractions=25, current=False):
        course = CourseSpec(name="prior", dose=None, date=dt.date(2024, 2, 2), startDate=start, isCurrent=current,
                            schedule=FractionSchedule(perDay, 6.0 if perDay > 1 else None))
        return pipeline.priorCourseSpanWarning(course, fractions)

    assert warning(dt.date(2024, 1, 1)) is None  # 32 days
    assert warning(dt.date(2023, 11, 1)) is None  # a break
    short = warning(dt.date(2024, 1, 2))
    assert short.startswith("course 'prior' runs from 2024-01-02 ('startDate') to 2024-02-02 ('date'), 31 days, but "
                            "its 25 fractions on five days a week take at least 32 days")
    assert warning(dt.date(2024, 1, 17), perDay=2) is None  # 16 days
    assert "25 fractions at 2 a day on five days a week take at least 16 days" in warning(dt.date(2024, 1, 18), 2)
    assert warning(dt.date(2024, 2, 2), fractions=1) is None
    assert warning(None) is None and warning(dt.date(2024, 1, 30), current=True) is None


def test_a_current_course_dated_before_its_own_plan_is_warned():
    """A review: the current course dated 19 months before its RTPLAN went without a word. Its date is its first
    fraction, which cannot precede the plan; the plan's own day is fine, and a prior course is not checked so."""
    plan = types.SimpleNamespace(date="20240102")

    def warning(date, current=True):
        course = CourseSpec(name="now", dose=None, plan="p/RTPLAN.dcm", date=date, isCurrent=current)
        return pipeline.currentCourseDateWarning(course, plan)

    assert warning(dt.date(2024, 1, 2)) is None and warning(dt.date(2024, 3, 1)) is None
    assert warning(dt.date(2024, 1, 1)) == (
        "course 'now' (the current course) is dated 2024-01-01, 1 day before its RTPLAN (RTPLAN.dcm, dated "
        "2024-01-02): its date is its first fraction, which cannot precede its plan; the intervals from the prior "
        "courses, and their time-based recovery, are read to this date: check it")
    assert warning(dt.date(2022, 6, 2), current=False) is None
    assert pipeline.currentCourseDateWarning(
        CourseSpec(name="now", dose=None, date=dt.date(2024, 1, 1), isCurrent=True), types.SimpleNamespace(date=""))\
        is None


def test_the_current_courses_date_is_checked_against_its_plan_whatever_the_recovery(demoCase):
    """A verification review: the check ran only with a time-based recovery model, but the dates also decide
    Nieder's ≥ 6 months between courses: with constant recovery only, a current course dated before its plan is
    warned too."""
    data = json.loads(demoCase.paths["case"].read_text())
    data["courses"][0]["registration"] = "truth/prior_registration.nrrd"
    data["mri"]["registration"] = "none"
    for tissue in data["tissues"].values():
        if "recovery" in tissue:
            tissue["recovery"] = {"model": "constant", "fraction": 0.25}
    plan = pydicom.dcmread(demoCase.paths["case"].parent / "current" / "RTPLAN.dcm", stop_before_pixels=True)
    planDate = dt.datetime.strptime(plan.RTPlanDate, "%Y%m%d").date()
    data["courses"][1]["date"] = (planDate - dt.timedelta(days=30)).isoformat()
    path = demoCase.paths["case"].parent / "case_dates_current_early.json"
    path.write_text(json.dumps(data))
    warned = [w for w in pipeline.loadCaseInputs(casefile.parseCaseFile(path)).warnings
              if "(the current course) is dated" in w]
    assert len(warned) == 1 and "30 days before its RTPLAN" in warned[0]
