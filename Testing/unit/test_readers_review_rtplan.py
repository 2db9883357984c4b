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
    """What _fractions reads from an RtDose."""

    def __init__(self, group=None):
        self.referencedPlanUid = ""
        self.referencedFractionGroupNumber = group


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
    from ReirradiationDoseLib.core.pipeline import checkablePrescription

    assert checkablePrescription(plan, Dose(group=2)) == 10.0 and checkablePrescription(plan, Dose()) is None


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
