"""Fractions and DoseSummationType of a dose volume loaded from DICOM, through the subject hierarchy and a database.

The dose volume nodes are made the way SlicerRT's DICOM-RT import makes them (``LoadRtDose`` in
SlicerRT ``DicomRtImportExport/Logic/vtkSlicerDicomRtImportExportModuleLogic.cxx``): attribute
``DicomRtImport.DoseVolume``, a series item with the "DICOM" UID, the referenced RTPLAN in
``DICOM.ReferencedInstanceUIDs``, ``InsertDicomSeriesInHierarchy`` (the same slicer-core function SlicerRT calls) and
the SOP instance UID. The database is :class:`FolderDicomIndex` over real files: the Eclipse prostate RTPLAN
(46 Gy / 23 fx, exported by Varian Eclipse 8.1), pydicom's RELATIVE/BEAM RTDOSE, and the generated demo case.
"""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from reirradiation_testing import sharedDataPath

from ReirradiationDoseLib.core.dicomwrite import PatientStudy, writeRtDose
from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.geometry import ImageGeometry
from ReirradiationDoseLib.core.rtdose import readRtDose
from ReirradiationDoseLib.mrml.dicomdatabase import (DoseNotAPlanDose, FolderDicomIndex, FractionsNotInPlan,
                                                     checkFractions, courseInfoFromDatabase, doseSeriesUids)
from ReirradiationDoseLib.mrml.nodes import volumeNodeFromArray

slicer = pytest.importorskip("slicer")

ECLIPSE_PLAN = "RP.1.2.246.352.71.5.2088656855.377401.20110920153647.dcm"
ECLIPSE_STRUCT = "RS.1.2.246.352.71.4.2088656855.2404649.20110920153449.dcm"


def loadLikeSlicerRt(scene, dosePath):
    """A dose volume node with the subject-hierarchy items SlicerRT's LoadRtDose creates for an RTDOSE file."""
    rtDose = readRtDose(dosePath, allowRelative=True)
    ds = pydicom.dcmread(dosePath, stop_before_pixels=True)
    node = volumeNodeFromArray(scene, rtDose.doseGy, rtDose.geometry, f"RTDOSE: {ds.get('SeriesDescription', '')}",
                               isDose=True)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    item = shNode.GetItemByDataNode(node) or shNode.CreateItem(shNode.GetSceneItemID(), node)
    shNode.SetItemUID(item, constants.GetDICOMUIDName(), str(ds.SeriesInstanceUID))
    shNode.SetItemAttribute(item, constants.GetDICOMReferencedInstanceUIDsAttributeName(), rtDose.referencedPlanUid)
    slicer.vtkSlicerSubjectHierarchyModuleLogic.InsertDicomSeriesInHierarchy(
        shNode, str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID))
    shNode.SetItemAttribute(item, constants.GetDICOMSeriesModalityAttributeName(), "RTDOSE")
    shNode.SetItemUID(item, constants.GetDICOMInstanceUIDName(), str(ds.SOPInstanceUID))
    return node


@pytest.fixture
def eclipseCase(tmp_path):
    """The Eclipse prostate RTPLAN and RTSTRUCT (real), with its dose (EclipseProstate_Dose.nrrd, converted by
    SlicerRT from the original RTDOSE) written back as an RTDOSE of the same patient and study referencing the
    plan."""
    source = sharedDataPath("eclipse-prostate-rtdicom")
    doseNrrd = sharedDataPath("slicerrt-testing", "EclipseProstate_Dose.nrrd")
    folder = tmp_path / "eclipse"
    folder.mkdir()
    for name in (ECLIPSE_PLAN, ECLIPSE_STRUCT):
        shutil.copy(source / name, folder / name)
    (folder / "notes.txt").write_text("not DICOM")
    plan = pydicom.dcmread(folder / ECLIPSE_PLAN, stop_before_pixels=True)
    image = sitk.ReadImage(str(doseNrrd), sitk.sitkFloat32)
    ps = PatientStudy(patientName=str(plan.PatientName), patientId=str(plan.PatientID),
                      studyInstanceUid=str(plan.StudyInstanceUID), studyDate=str(plan.StudyDate),
                      frameOfReferenceUid=pydicom.uid.generate_uid())
    dosePath = folder / "RD.eclipse.dcm"
    writeRtDose(dosePath, sitk.GetArrayFromImage(image), ImageGeometry.fromImage(image), ps, "PHYSICAL", "PLAN",
                "Eclipse prostate", referencedPlanUid=str(plan.SOPInstanceUID))
    return {"folder": folder, "dose": dosePath, "plan": folder / ECLIPSE_PLAN, "planDataset": plan}


def modified(path, target, **attributes):
    """A copy of a DICOM file at ``target`` with attributes set (None deletes)."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(target)
    return target


# ---- the Eclipse plan: 46 Gy / 23 fx ------------------------------------------------------------------------------

def test_eclipse_fractions_and_prescription_from_the_rtplan(scene, eclipseCase):
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    info = courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))
    assert info.fractions == 23
    assert info.prescriptionGy == pytest.approx(46.0)
    assert info.planLabel == "PROS"
    assert info.fractionGroupNumber == 1
    # DoseSummationType / DoseType / DoseUnits as the file states them
    written = pydicom.dcmread(eclipseCase["dose"], stop_before_pixels=True)
    assert (info.doseSummationType, info.doseType, info.doseUnits) == (written.DoseSummationType, "PHYSICAL", "GY")
    assert info.doseSummationType == "PLAN"
    assert info.planPath == str(eclipseCase["plan"].resolve())
    assert ECLIPSE_PLAN in info.fractionsSource and "'PROS'" in info.fractionsSource
    assert info.summary == "23 fx from RTPLAN PROS (46 Gy)"
    assert info.planSopInstanceUid == str(eclipseCase["planDataset"].SOPInstanceUID)
    assert info.warnings == ()


def test_subject_hierarchy_uids_are_where_slicerrt_puts_them(scene, eclipseCase):
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    written = pydicom.dcmread(eclipseCase["dose"], stop_before_pixels=True)
    seriesUid, instances, studyUid, referenced = doseSeriesUids(node)
    assert seriesUid == str(written.SeriesInstanceUID)
    assert instances == (str(written.SOPInstanceUID),)
    assert studyUid == str(eclipseCase["planDataset"].StudyInstanceUID)
    assert referenced == str(eclipseCase["planDataset"].SOPInstanceUID)
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = shNode.GetItemParent(shNode.GetItemByDataNode(node))
    patient = shNode.GetItemParent(study)
    assert shNode.GetItemLevel(study) == "Study" and shNode.GetItemLevel(patient) == "Patient"
    assert shNode.GetItemUID(patient, "DICOM") == "TEST PHYS PROSTATE"


def test_folder_index_answers_like_ctk_dicom_database(eclipseCase):
    index = FolderDicomIndex(eclipseCase["folder"])
    plan = eclipseCase["planDataset"]
    dose = pydicom.dcmread(eclipseCase["dose"], stop_before_pixels=True)
    study = str(plan.StudyInstanceUID)
    assert set(index.seriesForStudy(study)) >= {str(plan.SeriesInstanceUID), str(dose.SeriesInstanceUID)}
    assert index.studyForSeries(str(dose.SeriesInstanceUID)) == study
    assert index.filesForSeries(str(dose.SeriesInstanceUID)) == [str(eclipseCase["dose"].resolve())]
    assert index.fileForInstance(str(plan.SOPInstanceUID)) == str(eclipseCase["plan"].resolve())
    assert index.instanceForFile(str(eclipseCase["plan"])) == str(plan.SOPInstanceUID)
    assert index.fileValue(str(eclipseCase["plan"]), "300a,0002") == "PROS"  # RTPlanLabel
    assert index.fileValue(str(eclipseCase["plan"]), "0008,0060") == "RTPLAN"
    assert index.fileValue(str(eclipseCase["dose"]), "3004,000a") == "PLAN"  # DoseSummationType
    ipp = index.fileValue(str(eclipseCase["dose"]), "0020,0032").split("\\")  # multi-valued: backslashes
    assert [float(v) for v in ipp] == pytest.approx([float(v) for v in dose.ImagePositionPatient])
    assert index.fileValue(str(eclipseCase["plan"]), "3004,000a") == ""  # missing element: empty string
    assert index.fileForInstance("1.2.3.4") == "" and index.studyForSeries("1.2.3.4") == ""
    assert index.filesForSeries("1.2.3.4") == [] and index.seriesForStudy("1.2.3.4") == []
    assert [p.endswith("notes.txt") for p in index.skippedFiles] == [True]


# ---- the demo case: two courses in two studies ----------------------------------------------------------------

def test_demo_case_prior_and_current_course_fractions(scene, demoCase):
    index = FolderDicomIndex(demoCase.outputDir)
    prior = courseInfoFromDatabase(loadLikeSlicerRt(scene, demoCase.paths["priorDose"]), index)
    current = courseInfoFromDatabase(loadLikeSlicerRt(scene, demoCase.paths["currentDose"]), index)
    assert (prior.fractions, prior.prescriptionGy) == (25, pytest.approx(50.0))
    assert (current.fractions, current.prescriptionGy) == (17, pytest.approx(30.6))
    assert prior.planPath == str(demoCase.paths["priorPlan"].resolve())
    assert current.planPath == str(demoCase.paths["currentPlan"].resolve())
    assert prior.doseSummationType == current.doseSummationType == "PLAN"
    assert (prior.planLabel, current.planLabel) == ("PRIMARY 50/25", "REIRR 30.6/17")


# ---- refusals and "enter it by hand" ------------------------------------------------------------------------------

@pytest.mark.parametrize("summation", ["BEAM", "FRACTION_SESSION"])
def test_beam_or_session_dose_is_refused(scene, eclipseCase, summation):
    modified(eclipseCase["dose"], eclipseCase["dose"], DoseSummationType=summation)
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    with pytest.raises(DoseNotAPlanDose) as error:
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))
    message = str(error.value)
    assert f"{summation} dose" in message and "not the dose of the whole plan" in message
    assert error.value.path == str(eclipseCase["dose"].resolve())


def test_relative_dose_is_refused_real_pydicom_file(scene, tmp_path):
    folder = tmp_path / "relative"
    folder.mkdir()
    shutil.copy(sharedDataPath("pydicom-rt", "rtdose.dcm"), folder / "rtdose.dcm")
    node = loadLikeSlicerRt(scene, folder / "rtdose.dcm")
    with pytest.raises(DoseNotAPlanDose, match="RELATIVE; an absolute dose in Gy is required") as error:
        courseInfoFromDatabase(node, FolderDicomIndex(folder))
    assert error.value.path.endswith("rtdose.dcm")


def test_missing_rtplan_asks_for_fractions_by_hand(scene, eclipseCase):
    (eclipseCase["plan"]).unlink()
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    with pytest.raises(InputError) as error:
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))
    assert not isinstance(error.value, DoseNotAPlanDose)
    message = str(error.value)
    assert str(eclipseCase["planDataset"].SOPInstanceUID) in message and "not in the DICOM database" in message
    assert "enter the number of fractions by hand" in message
    assert error.value.path == str(eclipseCase["dose"].resolve())


def test_dose_without_referenced_plan(scene, eclipseCase):
    modified(eclipseCase["dose"], eclipseCase["dose"], ReferencedRTPlanSequence=None)
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    shNode.RemoveItemAttribute(shNode.GetItemByDataNode(node), "DICOM.ReferencedInstanceUIDs")
    with pytest.raises(InputError, match="references no RTPLAN.*enter it by hand"):
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))


def test_plan_without_fraction_count(scene, eclipseCase):
    ds = pydicom.dcmread(eclipseCase["plan"])
    del ds.FractionGroupSequence[0].NumberOfFractionsPlanned
    ds.save_as(eclipseCase["plan"])
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    with pytest.raises(InputError, match="states no number of planned fractions; enter it by hand") as error:
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))
    assert error.value.path == str(eclipseCase["plan"].resolve())


def test_node_without_dicom_uid(scene, eclipseCase):
    geometry = ImageGeometry((4, 4, 2), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    node = volumeNodeFromArray(scene, np.ones(geometry.shape, np.float32), geometry, "Typed-in dose", isDose=True)
    with pytest.raises(InputError, match="'Typed-in dose' was not loaded from the DICOM database"):
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))


def test_dose_series_not_in_the_database(scene, eclipseCase, tmp_path):
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(eclipseCase["plan"], other / ECLIPSE_PLAN)
    with pytest.raises(InputError, match="is not in the DICOM database; import the original files"):
        courseInfoFromDatabase(node, FolderDicomIndex(other))


def test_dose_of_one_fraction_group_of_a_two_group_plan(scene, eclipseCase):
    """A plan with a 23 fx and a 5 fx group (e.g. a sequential boost): a FRACTION dose's ReferencedFractionGroupNumber
    picks the group; a dose of the whole plan has no single number and must be entered by hand, also when it names
    a group (it took that group's 5 fractions: a verification review), and the module's warnings say why."""
    plan = pydicom.dcmread(eclipseCase["plan"])
    boost = pydicom.Dataset()
    boost.FractionGroupNumber = 2
    boost.NumberOfFractionsPlanned = 5
    boost.NumberOfBeams = 0
    plan.FractionGroupSequence.append(boost)
    plan.save_as(eclipseCase["plan"])
    index = FolderDicomIndex(eclipseCase["folder"])
    with pytest.raises(InputError, match=r"2 fraction groups \(group 1: 23 fx, group 2: 5 fx\)"):
        courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), index)
    dose = pydicom.dcmread(eclipseCase["dose"])
    group = pydicom.Dataset()
    group.ReferencedFractionGroupNumber = 2
    dose.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = pydicom.Sequence([group])
    dose.save_as(eclipseCase["dose"])
    node = loadLikeSlicerRt(scene, eclipseCase["dose"])
    with pytest.raises(FractionsNotInPlan, match="a dose of the whole plan has no single number of fractions"):
        courseInfoFromDatabase(node, FolderDicomIndex(eclipseCase["folder"]))
    source, warnings = checkFractions(node, 28, FolderDicomIndex(eclipseCase["folder"]), "Primary")
    assert source == "module input (the RTPLAN gives no single number)"
    assert len(warnings) == 1 and warnings[0].startswith("course 'Primary': its 28 entered fractions are used: ")
    assert "2 fraction groups (group 1: 23 fx, group 2: 5 fx)" in warnings[0]
    modified(eclipseCase["dose"], eclipseCase["dose"], DoseSummationType="FRACTION")
    info = courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))
    assert (info.fractions, info.fractionGroupNumber) == (5, 2)
    assert "fraction group 2" in info.fractionsSource
    # a FRACTION dose naming a group the plan lacks is refused naming the dose, whatever the plan's number of groups
    group.ReferencedFractionGroupNumber = 7
    dose = pydicom.dcmread(eclipseCase["dose"])
    dose.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = pydicom.Sequence([group])
    dose.save_as(eclipseCase["dose"])
    with pytest.raises(FractionsNotInPlan, match="fraction group 7, which its RTPLAN does not have"):
        courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))


def test_multi_plan_sum_has_no_single_fraction_count(scene, eclipseCase):
    """A sum of plans is refused as a course dose (before: the module let the user type in one number of fractions
    for it, and the dose command read it with its first plan's)."""
    modified(eclipseCase["dose"], eclipseCase["dose"], DoseSummationType="MULTI_PLAN")
    with pytest.raises(DoseNotAPlanDose, match="sum of several plans .*MULTI_PLAN.* no single number of fractions"):
        courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))
    # this tool's own composite (MULTI_PLAN, EFFECTIVE, "EQD2"): said to be an EQD2 already (a verification review)
    modified(eclipseCase["dose"], eclipseCase["dose"], DoseType="EFFECTIVE", SeriesDescription="Composite EQD2")
    with pytest.raises(DoseNotAPlanDose, match="already an EQD2 or BED"):
        courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))


def test_plan_in_another_study_is_used_with_a_warning(scene, eclipseCase):
    modified(eclipseCase["plan"], eclipseCase["plan"], StudyInstanceUID="1.2.3.4.5")
    info = courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))
    assert info.fractions == 23
    assert len(info.warnings) == 1 and "in another study (1.2.3.4.5)" in info.warnings[0]


# ---- the workflow checks each course's fractions against its RTPLAN ---------------------------------------------

def _demoInputs(scene, demoCase, priorFractions, database):
    from ReirradiationDoseLib.mrml.pipeline import doseInputsFromNodes

    prior = loadLikeSlicerRt(scene, demoCase.paths["priorDose"])
    current = loadLikeSlicerRt(scene, demoCase.paths["currentDose"])
    ct, _ = loadCtLikeSlicer(scene, demoCase.paths["currentCt"])  # (the dose as the CT is refused)
    return doseInputsFromNodes(ct, current, 17, priorCourses=[
        {"name": "Primary", "doseNode": prior, "numberOfFractions": priorFractions, "monthsBefore": 30.0}],
        dicomDatabase=database)


def test_workflow_records_the_rtplan_as_the_source_of_the_fractions(scene, demoCase):
    inputs = _demoInputs(scene, demoCase, 25, FolderDicomIndex(demoCase.outputDir))
    prior, current = inputs.courses
    assert "'PRIMARY 50/25'" in prior.fractionsSource and str(demoCase.paths["priorPlan"].resolve()) in \
        prior.fractionsSource
    assert "'REIRR 30.6/17'" in current.fractionsSource
    assert inputs.warnings == []


def test_workflow_warns_when_the_entered_fractions_differ_from_the_rtplan(scene, demoCase):
    inputs = _demoInputs(scene, demoCase, 20, FolderDicomIndex(demoCase.outputDir))
    prior = inputs.courses[0]
    assert prior.numberOfFractions == 20  # the user's number is used, and the difference is reported
    assert prior.fractionsSource == "module input (20; RTPLAN states 25)"
    assert len(inputs.warnings) == 1
    assert "course 'Primary': 20 fractions were entered but the RTPLAN PRIMARY 50/25 plans 25" in inputs.warnings[0]


def test_workflow_warns_two_courses_of_one_rtplan(scene, demoCase, tmp_path):
    """A second verification review: the warning that two courses' doses name one RTPLAN (the phases of one
    treatment, a prior one credited recovery) did not reach the module, whose courses carried only a node name."""
    folder = tmp_path / "case"
    shutil.copytree(demoCase.outputDir, folder)
    current = folder / demoCase.paths["currentDose"].relative_to(demoCase.outputDir)
    priorPlanUid = str(pydicom.dcmread(demoCase.paths["priorPlan"]).SOPInstanceUID)
    dose = pydicom.dcmread(current)
    dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID = priorPlanUid
    dose.save_as(current)
    from ReirradiationDoseLib.mrml.pipeline import doseInputsFromNodes

    prior = loadLikeSlicerRt(scene, folder / demoCase.paths["priorDose"].relative_to(demoCase.outputDir))
    ct, _ = loadCtLikeSlicer(scene, demoCase.paths["currentCt"])
    inputs = doseInputsFromNodes(ct, loadLikeSlicerRt(scene, current), 25, priorCourses=[
        {"name": "Primary", "doseNode": prior, "numberOfFractions": 25, "monthsBefore": 30.0}],
        dicomDatabase=FolderDicomIndex(folder))
    assert [c.doseInfo["referencedPlanUid"] for c in inputs.courses] == [priorPlanUid, priorPlanUid]
    assert inputs.warnings[-1] == (f"courses 'Primary', 'Current course' are doses of one RTPLAN ({priorPlanUid}), "
                                   "the phases of one treatment: each is summed as a course of its own, and a prior "
                                   "one is credited any recovery the case gives before the next")
    assert _demoInputs(scene, demoCase, 25, FolderDicomIndex(demoCase.outputDir)).warnings == []  # two plans


def test_workflow_without_a_database_keeps_the_entered_fractions(scene, demoCase):
    inputs = _demoInputs(scene, demoCase, 25, None)
    assert [c.fractionsSource for c in inputs.courses] == ["module input", "module input"]


def test_workflow_refuses_a_beam_dose(scene, demoCase, tmp_path):
    folder = tmp_path / "case"
    shutil.copytree(demoCase.outputDir, folder)
    priorDose = folder / demoCase.paths["priorDose"].relative_to(demoCase.outputDir)
    modified(priorDose, priorDose, DoseSummationType="BEAM")
    from ReirradiationDoseLib.mrml.pipeline import doseInputsFromNodes

    prior = loadLikeSlicerRt(scene, priorDose)
    current = loadLikeSlicerRt(scene, folder / demoCase.paths["currentDose"].relative_to(demoCase.outputDir))
    ct, _ = loadCtLikeSlicer(scene, demoCase.paths["currentCt"])
    with pytest.raises(DoseNotAPlanDose, match="BEAM dose"):
        doseInputsFromNodes(ct, current, 17, priorCourses=[
            {"name": "Primary", "doseNode": prior, "numberOfFractions": 25, "monthsBefore": 30.0}],
            dicomDatabase=FolderDicomIndex(folder))


def test_a_fraction_groups_dose_is_a_course_of_that_groups_fractions(scene, eclipseCase):
    """DoseSummationType FRACTION is "dose calculated for a single Fraction Group within RT Plan" (DICOM PS3.3
    C.8.8.3), a phase's whole delivery: it was refused, so a sequential boost's phases could not be given as courses
    of their own. Of a plan of one group it is that group's dose; of a plan of two, the group the dose names, with
    that group's own prescription (a review: the plan's highest, 46 Gy, was shown for a 5-fraction boost)."""
    modified(eclipseCase["dose"], eclipseCase["dose"], DoseSummationType="FRACTION")
    info = courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))
    assert (info.fractions, info.doseSummationType, info.prescriptionGy) == (23, "FRACTION", 46.0)
    plan = pydicom.dcmread(eclipseCase["plan"])
    boostReference = pydicom.Dataset()
    boostReference.DoseReferenceNumber, boostReference.DoseReferenceStructureType = 99, "VOLUME"
    boostReference.DoseReferenceType, boostReference.TargetPrescriptionDose = "TARGET", 10.0
    plan.DoseReferenceSequence.append(boostReference)
    boost = pydicom.Dataset()
    boost.FractionGroupNumber, boost.NumberOfFractionsPlanned, boost.NumberOfBeams = 2, 5, 0
    referenced = pydicom.Dataset()
    referenced.ReferencedDoseReferenceNumber = 99
    boost.ReferencedDoseReferenceSequence = pydicom.Sequence([referenced])
    plan.FractionGroupSequence.append(boost)
    plan.save_as(eclipseCase["plan"])
    dose = pydicom.dcmread(eclipseCase["dose"])
    group = pydicom.Dataset()
    group.ReferencedFractionGroupNumber = 2
    dose.ReferencedRTPlanSequence[0].ReferencedFractionGroupSequence = pydicom.Sequence([group])
    dose.save_as(eclipseCase["dose"])
    info = courseInfoFromDatabase(loadLikeSlicerRt(scene, eclipseCase["dose"]), FolderDicomIndex(eclipseCase["folder"]))
    assert (info.fractions, info.fractionGroupNumber, info.prescriptionGy) == (5, 2, 10.0)
    assert "fraction group 2" in info.fractionsSource


def loadCtLikeSlicer(scene, folder):
    """A CT volume node with the subject-hierarchy items Slicer's DICOM scalar-volume plugin gives it: the series
    UID, the SOP instance UIDs of its slices, under its patient and study."""
    from ReirradiationDoseLib.core.dicomimage import readImageSeries

    image, info = readImageSeries(folder)
    node = volumeNodeFromArray(scene, sitk.GetArrayFromImage(image).astype(np.int16), ImageGeometry.fromImage(image),
                               "CT")
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    constants = slicer.vtkMRMLSubjectHierarchyConstants
    item = shNode.GetItemByDataNode(node) or shNode.CreateItem(shNode.GetSceneItemID(), node)
    shNode.SetItemUID(item, constants.GetDICOMUIDName(), info.seriesInstanceUid)
    shNode.SetItemUID(item, constants.GetDICOMInstanceUIDName(), " ".join(info.sopInstanceUids))
    slicer.vtkSlicerSubjectHierarchyModuleLogic.InsertDicomSeriesInHierarchy(
        shNode, info.patientId, info.studyInstanceUid, info.seriesInstanceUid)
    return node, info


def _structures(scene, demoCase, ct, info):
    from ReirradiationDoseLib.core import segio
    from ReirradiationDoseLib.mrml.nodes import segmentationNodeFromMasks

    masks, _, _ = segio.readSegmentationWithGeometry(demoCase.paths["currentStructures"], info.geometry)
    return segmentationNodeFromMasks(scene, masks, info.geometry, referenceVolumeNode=ct)


def test_saved_outputs_name_the_planning_ct_s_patient_study_and_frame(scene, demoCase, tmp_path):
    """The module's "Save" writes what the dose command writes; its RTDOSE carries the planning CT's patient, study
    and frame of reference, read through the DICOM database (before, the module's result had none: the RTDOSE got
    new UIDs, and no planning system would have placed it on the CT). The report leaves the identity out."""
    import json

    from ReirradiationDoseLib.mrml.pipeline import runDoseWorkflow, saveDoseOutputs

    ct, info = loadCtLikeSlicer(scene, demoCase.paths["currentCt"])
    current = loadLikeSlicerRt(scene, demoCase.paths["currentDose"])
    out = runDoseWorkflow(scene, ct, current, 17, structures=_structures(scene, demoCase, ct, info),
                          isodoseLevelsGy=[20, 30], dicomDatabase=FolderDicomIndex(demoCase.outputDir))
    written = saveDoseOutputs(out["result"], tmp_path / "saved")
    names = {p.name for p in written}
    assert {"composite_eqd2.dcm", "report.html", "summary.json", "dvh.csv", "constraints.csv",
            "isodose_axial.png", "scene.mrb"} <= names
    rtDose = pydicom.dcmread(tmp_path / "saved" / "composite_eqd2.dcm", stop_before_pixels=True)
    assert rtDose.FrameOfReferenceUID == info.frameOfReferenceUid != ""
    assert rtDose.StudyInstanceUID == info.studyInstanceUid and rtDose.PatientID == info.patientId
    report = (tmp_path / "saved" / "report.html").read_text()
    assert info.patientId not in report and "Patient identity omitted" in report
    warnings = json.loads((tmp_path / "saved" / "summary.json").read_text())["warnings"]
    assert not any("carries no DICOM frame of reference" in w for w in warnings), warnings
    # the module's "Patient's name and ID in the report" box
    saveDoseOutputs(out["result"], tmp_path / "named", includeIdentity=True)
    assert info.patientId in (tmp_path / "named" / "report.html").read_text()


def test_saved_outputs_without_dicom_say_the_rtdose_is_not_on_the_ct_s_frame(scene, demoCase, tmp_path,
                                                                             monkeypatch):
    """A planning CT not loaded from DICOM: the RTDOSE gets new UIDs and the warnings say so (once, however often
    the run is saved); pictures that cannot be rendered leave the other outputs written, and say so."""
    import json

    from ReirradiationDoseLib.mrml import dosescene
    from ReirradiationDoseLib.mrml.pipeline import runDoseWorkflow, saveDoseOutputs

    ct, info = loadCtLikeSlicer(scene, demoCase.paths["currentCt"])
    current = loadLikeSlicerRt(scene, demoCase.paths["currentDose"])
    out = runDoseWorkflow(scene, ct, current, 17, structures=_structures(scene, demoCase, ct, info),
                          dicomDatabase=None)
    before = list(out["result"].warnings)

    def broken(*args, **kwargs):
        raise RuntimeError("no OpenGL context")

    monkeypatch.setattr(dosescene, "renderSliceView", broken)
    for attempt in ("first", "second"):
        written = {p.name for p in saveDoseOutputs(out["result"], tmp_path / attempt)}
        assert "composite_eqd2.dcm" in written and not any(n.endswith((".png", ".mrb")) for n in written)
        assert not list((tmp_path / attempt).glob("*.png")) and not list((tmp_path / attempt).glob("*.mrb"))
        warnings = json.loads((tmp_path / attempt / "summary.json").read_text())["warnings"]
        frame = [w for w in warnings if "carries no DICOM frame of reference" in w]
        assert len(frame) == 1 and frame[0].startswith("RTDOSE: the reference image (CT)"), warnings
        skipped = "pictures and scene.mrb skipped: the picture step (writeDosePictures) failed: RuntimeError: no "
        assert sum(skipped + "OpenGL context" in w for w in warnings) == 1
        rtDose = pydicom.dcmread(tmp_path / attempt / "composite_eqd2.dcm", stop_before_pixels=True)
        assert rtDose.FrameOfReferenceUID != info.frameOfReferenceUid
    assert out["result"].warnings == before
