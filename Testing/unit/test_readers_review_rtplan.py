"""RTPLAN fraction groups (readers review): a plan with several fraction groups has no single number of fractions
even when the groups' counts are equal, a group without NumberOfFractionsPlanned is not skipped, and the pipeline
takes the group the RTDOSE names; fractions in the case file are used when the plan is ambiguous."""

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from ReirradiationDoseLib.core.casefile import CourseSpec
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.pipeline import _fractions
from ReirradiationDoseLib.core.rtplan import readRtPlan
from reirradiation_testing import newDicomFile


def writePlan(path, groups, groupPrescriptionsGy=None):
    """An RTPLAN with fraction groups ``[(number, fractions or None), ...]`` and a 50 Gy target prescription; with
    ``groupPrescriptionsGy`` (one per group) each group references a dose reference of its own holding it."""
    ds = newDicomFile("1.2.840.10008.5.1.4.1.1.481.5", "RTPLAN")
    ds.RTPlanLabel = "REV"
    items = []
    for number, fractions in groups:
        group = Dataset()
        group.FractionGroupNumber = number
        if fractions is not None:
            group.NumberOfFractionsPlanned = fractions
        group.NumberOfBeams, group.NumberOfBrachyApplicationSetups = 0, 0
        items.append(group)
    ds.FractionGroupSequence = Sequence(items)
    reference = Dataset()
    reference.DoseReferenceNumber, reference.DoseReferenceStructureType = 1, "VOLUME"
    reference.DoseReferenceType, reference.TargetPrescriptionDose = "TARGET", 50.0
    ds.DoseReferenceSequence = Sequence([reference])
    for index, prescription in enumerate(groupPrescriptionsGy or ()):
        own = Dataset()
        own.DoseReferenceNumber, own.DoseReferenceStructureType = 10 + index, "VOLUME"
        own.DoseReferenceType, own.TargetPrescriptionDose = "TARGET", prescription
        ds.DoseReferenceSequence.append(own)
        referenced = Dataset()
        referenced.ReferencedDoseReferenceNumber = 10 + index
        items[index].ReferencedDoseReferenceSequence = Sequence([referenced])
    ds.save_as(path, enforce_file_format=True)
    return path


class Dose:
    """What _fractions reads from an RtDose: a dose of one fraction group (FRACTION) when it names one."""

    def __init__(self, group=None, summationType=None):
        self.referencedPlanUid = ""
        self.referencedFractionGroupNumber = group
        self.summationType = summationType or ("FRACTION" if group is not None else "PLAN")
        self.path = "rd.dcm"


def test_two_groups_with_equal_counts_are_not_collapsed(tmp_path):
    plan = readRtPlan(writePlan(tmp_path / "phases.dcm", [(1, 25), (2, 25)]))  # a PLAN dose of both: 50 fractions
    with pytest.raises(InputError, match="2 fraction groups") as excinfo:
        _ = plan.numberOfFractions
    assert "phases.dcm" in str(excinfo.value)
    assert plan.fractionsOfGroup(2) == 25
    assert plan.dosePerFractionGy is None


def test_a_group_without_planned_fractions_is_not_skipped(tmp_path):
    plan = readRtPlan(writePlan(tmp_path / "missing.dcm", [(1, 25), (2, None)]))
    with pytest.raises(InputError, match=r"2 fraction groups \(group 1: 25 fx, group 2: not stated\)"):
        _ = plan.numberOfFractions
    assert plan.fractionsOfGroup(1) == 25
    with pytest.raises(InputError, match="fraction group 2 of the RTPLAN states no number of planned fractions"):
        plan.fractionsOfGroup(2)
    with pytest.raises(InputError, match="no fraction group 3"):
        plan.fractionsOfGroup(3)


def test_one_group_unchanged(tmp_path):
    plan = readRtPlan(writePlan(tmp_path / "one.dcm", [(1, 25)]))
    assert plan.numberOfFractions == 25 == plan.fractionsOfGroup(1) == plan.fractionsOfGroup(None)
    assert plan.dosePerFractionGy == pytest.approx(2.0)
    plan = readRtPlan(writePlan(tmp_path / "none.dcm", [(1, None)]))
    with pytest.raises(InputError, match="the RTPLAN states no number of planned fractions; enter it by hand"):
        _ = plan.numberOfFractions


def course(planPath, fractions=None):
    return CourseSpec(name="prior", dose=Path("rd.dcm"), plan=planPath, fractions=fractions)


def test_pipeline_takes_the_fraction_group_the_dose_names(tmp_path):
    """The group's fractions, and its own prescription: a review found a sequential boost's 5-fraction group shown
    with the plan's highest prescription, 50 Gy, instead of the 10 Gy of the dose reference the group names; a
    group naming none has none (the plan-wide 50 Gy is not the group's)."""
    path = writePlan(tmp_path / "boost.dcm", [(1, 25), (2, 5)])
    fractions, source, prescription, _ = _fractions(course(path), readRtPlan(path), Dose(group=2), [])
    assert (fractions, source, prescription) == (5, "RTPLAN boost.dcm", None)
    with pytest.raises(InputError, match="2 fraction groups"):
        _fractions(course(path), readRtPlan(path), Dose(), [])
    path = writePlan(tmp_path / "phases.dcm", [(1, 25), (2, 5)], groupPrescriptionsGy=[50.0, 10.0])
    plan = readRtPlan(path)
    assert (plan.prescriptionOfGroup(1), plan.prescriptionOfGroup(2), plan.prescriptionGy) == (50.0, 10.0, 50.0)
    assert _fractions(course(path), plan, Dose(group=2), [])[:3] == (5, "RTPLAN phases.dcm", 10.0)
    assert _fractions(course(path), plan, Dose(group=1), [])[:3] == (25, "RTPLAN phases.dcm", 50.0)
    # the dose's maximum is compared with its group's prescription (before: not at all in a plan of several)
    from ReirradiationDoseLib.core.pipeline import planPrescriptionOfDose

    assert planPrescriptionOfDose(plan, Dose(group=2)) == 10.0 and planPrescriptionOfDose(plan, Dose()) is None


def test_pipeline_refuses_equal_groups_without_a_named_group(tmp_path):
    path = writePlan(tmp_path / "phases.dcm", [(1, 25), (2, 25)])
    with pytest.raises(InputError, match="2 fraction groups"):
        _fractions(course(path), readRtPlan(path), Dose(), [])


def test_pipeline_uses_the_case_fractions_when_the_plan_is_ambiguous_and_says_so(tmp_path):
    path = writePlan(tmp_path / "boost.dcm", [(1, 25), (2, 5)])
    warnings = []
    fractions, source, _, _ = _fractions(course(path, 30), readRtPlan(path), Dose(), warnings)
    assert fractions == 30 and source.startswith("case file")
    assert len(warnings) == 1 and "30 fractions from the case file" in warnings[0] and "boost.dcm" in warnings[0]
    assert "2 fraction groups" in warnings[0]
    # the group the dose names, when it agrees with the case file: no warning
    warnings = []
    assert _fractions(course(path, 5), readRtPlan(path), Dose(group=2), warnings)[:2] == (5, "case file")
    assert warnings == []


def test_fraction_group_zero_is_its_own_number_and_duplicates_are_refused(tmp_path):
    """Groups numbered 0 and 1 (0 is a valid number): a dose of group 1 read 25 fractions, group 0's, as the reader
    renumbered group 0 to 1; two groups of one number are refused."""
    plan = readRtPlan(writePlan(tmp_path / "zero.dcm", [(0, 25), (1, 5)]))
    assert [(g.number, g.numberOfFractionsPlanned) for g in plan.fractionGroups] == [(0, 25), (1, 5)]
    assert plan.fractionsOfGroup(1) == 5 and plan.fractionsOfGroup(0) == 25
    with pytest.raises(InputError, match="two fraction groups numbered 2"):
        readRtPlan(writePlan(tmp_path / "twice.dcm", [(2, 25), (2, 5)]))


def test_only_a_fraction_dose_is_one_groups_and_its_group_must_be_the_plans(tmp_path):
    """A verification review: a dose of the whole plan naming a group took that group's 5 fractions (the plan's are
    30); a FRACTION dose naming a group a one-group plan lacks took the plan's group without a word; a FRACTION dose
    naming no group in a plan of two was told to 'choose one explicitly', which nothing lets a user do."""
    two = writePlan(tmp_path / "two.dcm", [(1, 25), (2, 5)])
    with pytest.raises(InputError, match="a dose of the whole plan has no single number of fractions; give it by hand"):
        _fractions(course(two), readRtPlan(two), Dose(group=2, summationType="PLAN"), [])
    with pytest.raises(InputError, match=r"rd.dcm: course 'prior': the RTDOSE is a FRACTION dose .* names no fraction "
                                         r"group .* its RTPLAN has 2 \(1, 2\): give the course's number of fractions "
                                         r"by hand"):
        _fractions(course(two), readRtPlan(two), Dose(summationType="FRACTION"), [])
    one = writePlan(tmp_path / "one.dcm", [(1, 25)])
    assert _fractions(course(one), readRtPlan(one), Dose(summationType="FRACTION"), [])[0] == 25
    assert _fractions(course(one), readRtPlan(one), Dose(group=3, summationType="PLAN"), [])[0] == 25  # whole plan
    with pytest.raises(InputError, match=r"fraction group 3, which its RTPLAN does not have \(its groups: 1\)"):
        _fractions(course(one), readRtPlan(one), Dose(group=3), [])
    warnings = []  # with the case's fractions: used, and the reason said
    assert _fractions(course(one, 25), readRtPlan(one), Dose(group=3), warnings)[:2] == \
        (25, "case file (the RTPLAN gives no single number)")
    assert len(warnings) == 1 and "fraction group 3, which its RTPLAN does not have" in warnings[0]


def test_two_courses_of_one_rtplan_are_warned_as_its_phases():
    """A verification review: a sequential boost's two phases (FRACTION doses of one RTPLAN) given as prior and
    current course were credited recovery between them with only the generic early-recovery warning."""
    from types import SimpleNamespace

    from ReirradiationDoseLib.core.pipeline import samePlanWarnings

    courses = [SimpleNamespace(name=name, doseInfo={"referencedPlanUid": uid})
               for name, uid in (("phase 1", "1.2.3"), ("boost", "1.2.3"), ("re-irradiation", "1.2.9"))]
    assert samePlanWarnings(courses) == [
        "courses 'phase 1', 'boost' are doses of one RTPLAN (1.2.3), the phases of one treatment: each is summed as a "
        "course of its own, and a prior one is credited any recovery the case gives before the next"]
    assert samePlanWarnings(courses[1:]) == []


def test_a_plan_giving_no_number_takes_the_case_fractions_and_refusals_name_the_course_and_plan(tmp_path):
    """A second verification review: a plan of one group with an empty NumberOfFractionsPlanned (a Type 2
    attribute) was refused although the case gave the fractions; refusals named only the RTDOSE."""
    empty = writePlan(tmp_path / "empty.dcm", [(1, None)])
    warnings = []
    assert _fractions(course(empty, 20), readRtPlan(empty), Dose(), warnings)[:2] == \
        (20, "case file (the RTPLAN gives no single number)")
    assert len(warnings) == 1 and "20 fractions from the case file are used" in warnings[0]
    two = writePlan(tmp_path / "two.dcm", [(1, 25), (2, 5)])
    with pytest.raises(InputError, match=r"^rd.dcm: course 'prior': the RTDOSE is a FRACTION dose .* \(its RTPLAN "
                                         r"two.dcm: group 1: 25 fx, group 2: 5 fx; by hand: the course's 'fractions' "
                                         r"in the case file\)$"):
        _fractions(course(two), readRtPlan(two), Dose(summationType="FRACTION"), [])


def test_a_low_maximum_against_a_groups_prescription_is_still_warned():
    """A second verification review: one 8.4 Gy session of a 3 × 8 Gy group labelled FRACTION went through without
    a word once plans of several groups were spared the low side; it is warned, saying that a group's dose
    reference may hold the cumulative prescription."""
    import numpy as np

    from ReirradiationDoseLib.core.pipeline import prescriptionWarning

    dose = np.zeros((4, 4, 4))
    dose[1, 1, 1] = 8.4
    warning = prescriptionWarning(dose, 24.0, "course 'boost'", "RP.dcm", ofGroup=True)
    assert warning.startswith("course 'boost': its maximum 8.4 Gy is 0.35 times the prescription of the RTPLAN RP.dcm")
    assert warning.endswith("(a fraction group's dose reference may hold the prescription of all the plan's phases: "
                            "then a lower maximum is expected)")
    assert "may hold" not in prescriptionWarning(dose, 24.0, "x", ofGroup=False)
    dose[1, 1, 1] = 90.0  # above three times: no note
    assert "may hold" not in prescriptionWarning(dose, 24.0, "x", ofGroup=True)
