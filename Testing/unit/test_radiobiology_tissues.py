"""Tissue table (lookup, overlap priority, α/β and recovery maps) and recovery models."""

import datetime

import numpy as np
import pytest

from ReirradiationDoseLib.core.errors import InputError
from ReirradiationDoseLib.core.radiobiology import compositeEqd2, eqd2Gy
from ReirradiationDoseLib.core.recovery import (
    ConstantRecovery,
    NoRecovery,
    StepRecovery,
    niederDoiRecovery,
    priceRecovery,
    recoveryModelFromDict,
)
from ReirradiationDoseLib.core.resources import resourcePath
from ReirradiationDoseLib.core.tissues import (
    TissueEntry,
    TissueTable,
    alphaBetaMap,
    normalizeStructureName,
    recoveryMap,
    recoverySummary,
)


@pytest.fixture(scope="module")
def table():
    return TissueTable.default()


def test_resource_path_points_into_module_resources():
    path = resourcePath("Tissues_Default.json")
    assert path.parent.name == "ReirradiationDose" and path.parent.parent.name == "Resources"
    with pytest.raises(InputError):
        resourcePath("nope.json")


@pytest.mark.parametrize("name, tissue, alphaBeta", [
    ("Rectum", "Rectum", 3.0), ("rectum", "Rectum", 3.0), (" RECTUM ", "Rectum", 3.0),
    ("PTV", "Tumour", 10.0), ("GTV_recurrence", "Tumour", 10.0), ("CTV 45", "Tumour", 10.0),
    ("Spinal Cord", "SpinalCord", 2.0), ("SpinalCord_Lumbar", "SpinalCord_Lumbar", 4.0),
    ("Cauda_Equina", "CaudaEquina", 2.0), ("Sacral Plexus", "SacralPlex", 2.0),
    ("Femoral Head Lt", "Femur_Head_L", 3.0), ("Femur_Head_R", "Femur_Head_R", 3.0),
    ("Bowel_Small", "Bowel", 3.0), ("BODY", "External", 3.0), ("Bladder", "Bladder", 3.0),
])
def test_lookup_tolerant_of_case_spaces_aliases(table, name, tissue, alphaBeta):
    entry = table.lookup(name)
    assert entry is not None and entry.name == tissue and entry.alphaBetaGy == alphaBeta


def test_every_default_entry_has_a_source(table):
    assert all(entry.source for entry in table.entries)
    assert table.defaultAlphaBetaGy == 3.0
    assert table.lookup("Unknown organ") is None
    assert normalizeStructureName("Femoral Head_Lt") == "femoralheadlt"


def test_round_trip_and_per_case_edit(table):
    again = TissueTable.fromDict(table.toDict())
    assert [e.toDict() for e in again.entries] == [e.toDict() for e in table.entries]
    edited = table.withEntry(TissueEntry("Rectum", 5.0, ConstantRecovery(0.25), priority=70))
    assert edited.lookup("rectum").alphaBetaGy == 5.0
    assert table.lookup("rectum").alphaBetaGy == 3.0  # original untouched
    with pytest.raises(InputError, match="both"):
        TissueTable((TissueEntry("A", 3, aliases=("x",)), TissueEntry("B", 3, aliases=("X",))))
    with pytest.raises(InputError):
        TissueEntry("A", 0.0)


def test_alpha_beta_map_priority_rule(table):
    # voxels: 0 PTV only, 1 PTV+Rectum, 2 Rectum+SpinalCord, 3 Rectum, 4 none, 5 unknown structure, 6 BODY+Rectum,
    # 7 unknown + BODY (the body outline, priority -1000, yields to any organ inside it, one the table does not
    # know included: that organ takes the default α/β, not the body's)
    masks = {
        "PTV": np.array([1, 1, 0, 0, 0, 0, 0, 0], bool),
        "Rectum": np.array([0, 1, 1, 1, 0, 0, 1, 0], bool),
        "SpinalCord": np.array([0, 0, 1, 0, 0, 0, 0, 0], bool),
        "Mystery": np.array([0, 0, 0, 0, 0, 1, 0, 1], bool),
        "BODY": np.array([1, 1, 1, 1, 0, 0, 1, 1], bool),
    }
    ab, owner, names = alphaBetaMap(masks, table, defaultAlphaBetaGy=3.5)
    assert ab.dtype == np.float32
    assert list(ab) == [10.0, 10.0, 2.0, 3.0, 3.5, 3.5, 3.0, 3.5]
    owners = ["" if k == 0 else names[k - 1] for k in owner]
    assert owners == ["PTV", "PTV", "SpinalCord", "Rectum", "", "Mystery", "Rectum", "Mystery"]
    assert names[0] == "PTV"  # targets first


def test_alpha_beta_map_tie_broken_by_lower_alpha_beta():
    table = TissueTable((TissueEntry("A", 4.0, priority=5), TissueEntry("B", 2.0, priority=5)))
    ab, _, _ = alphaBetaMap({"A": np.ones(2, bool), "B": np.array([1, 0], bool)}, table)
    assert list(ab) == [2.0, 4.0]


def test_alpha_beta_map_refuses_mixed_grids(table):
    with pytest.raises(InputError, match="grid"):
        alphaBetaMap({"A": np.ones(3, bool), "B": np.ones(4, bool)}, table)


def test_recovery_map_targets_zero_and_models_per_organ(table):
    table = table.withEntry(TissueEntry("Rectum", 3.0, ConstantRecovery(0.25), priority=70))
    table = table.withEntry(TissueEntry("SpinalCord", 2.0, niederDoiRecovery(), priority=95))
    masks = {
        "PTV": np.array([1, 1, 0, 0, 0], bool),
        "Rectum": np.array([0, 1, 1, 0, 0], bool),
        "Spinal Cord": np.array([0, 0, 0, 1, 0], bool),
    }
    prior, current = datetime.date(2020, 1, 1), datetime.date(2021, 3, 1)  # 425 days ≥ 12 months
    r = recoveryMap(masks, table, prior, current)
    assert r.dtype == np.float32
    assert list(r) == [0.0, 0.0, 0.25, 0.5, 0.0]
    r = recoveryMap(masks, table, prior, current, defaultModel=ConstantRecovery(0.1))
    assert r[4] == pytest.approx(0.1)
    summary = recoverySummary(masks, table, prior, current)
    assert summary["intervalDays"] == 425
    assert summary["structures"]["Spinal Cord"]["model"]["model"] == "nieder-doi"
    assert summary["structures"]["PTV"]["fraction"] == 0.0


def test_recovery_map_feeds_composite_case6(table):
    # REFERENCE §2 case 6: rectum 25 % recovery → 66.88 Gy; tumour voxel no recovery, α/β 10 → 80.09 Gy
    table = table.withEntry(TissueEntry("Rectum", 3.0, ConstantRecovery(0.25), priority=70))
    masks = {"PTV": np.array([1, 0], bool), "Rectum": np.array([0, 1], bool)}
    ab, _, _ = alphaBetaMap(masks, table)
    r = recoveryMap(masks, table, None, None)
    composite = compositeEqd2([eqd2Gy(np.full(2, 50.0), 25, ab), eqd2Gy(np.full(2, 30.6), 17, ab)], [r, None])
    assert composite == pytest.approx([80.09, 66.88], abs=0.01)


def test_time_model_needs_dates(table):
    table = table.withEntry(TissueEntry("Rectum", 3.0, priceRecovery(), priority=70))
    with pytest.raises(InputError, match="dates"):
        recoveryMap({"Rectum": np.ones(2, bool)}, table, None, datetime.date(2021, 1, 1))


# ---- recovery models ----------------------------------------------------------------------------------------
# intervals in days, written out: months of 365.25 / 12 = 30.4375 days (a mutation review: built from the module's own
# constant, the tests could not see a wrong month length); 6 months = 182.625 d, 12 = 365.25 d
@pytest.mark.parametrize("days, expected", [(0, 0.0), (179.6, 0.0), (182.625, 0.25), (182.62, 0.0), (362.2, 0.25),
                                            (365, 0.25), (365.25, 0.5), (366, 0.5), (1217.5, 0.5)])
def test_nieder_doi_steps(days, expected):
    assert niederDoiRecovery().fractionFor(days) == pytest.approx(expected)


@pytest.mark.parametrize("days, expected", [(91.3, 0.0), (182.625, 0.0), (273.9375, 0.25), (365.25, 0.5), (730.5, 0.5)])
def test_price_rises_to_half_at_one_year(days, expected):
    assert priceRecovery().fractionFor(days) == pytest.approx(expected)


def test_none_and_constant():
    assert NoRecovery().fractionFor(1000) == 0.0
    assert ConstantRecovery(0.23).fractionFor(None) == 0.23
    with pytest.raises(InputError):
        ConstantRecovery(1.2)
    with pytest.raises(InputError):
        NoRecovery().fractionFor(-3)


@pytest.mark.parametrize("model", [NoRecovery(), ConstantRecovery(0.3), niederDoiRecovery(), priceRecovery(),
                                   StepRecovery("custom", (3, 9), (0.1, 0.4))])
def test_model_round_trip_through_dict(model):
    data = model.toDict()
    assert "model" in data
    again = recoveryModelFromDict(data)
    assert again == model
    for days in (0, 100, 200, 300, 500):
        assert again.fractionFor(days) == model.fractionFor(days)


def test_model_from_name_and_bad_input():
    assert recoveryModelFromDict("nieder-doi") == niederDoiRecovery()
    assert recoveryModelFromDict(None) == NoRecovery()
    with pytest.raises(InputError, match="unknown"):
        recoveryModelFromDict("magic")
    with pytest.raises(InputError):
        StepRecovery("bad", (12, 6), (0.1, 0.2))


@pytest.mark.parametrize(("name", "tissue", "alphaBeta"), [
    ("SacralPlex_L", "SacralPlex", 2.0), ("Sacral Plexus R", "SacralPlex", 2.0),
    ("Plexus_Lumbosacral-Left", "SacralPlex", 2.0), ("Femur_Head_Lt", "Femur_Head_L", 3.0),
    ("Hip Right", "Femur_Head_R", 3.0), ("Bladder", "Bladder", 3.0),
    # the side written first, as in real RTSTRUCTs (a review on real data: these read the default α/β 3)
    ("Lt Sacral Plexus", "SacralPlex", 2.0), ("Rt Femoral Head", "Femur_Head_R", 3.0),
    ("Left Femoral Head", "Femur_Head_L", 3.0)])
def test_a_side_reads_the_organs_entry(table, name, tissue, alphaBeta):
    """An independent audit: "SacralPlex_L" took the default α/β 3 instead of the nerve's 2, without a word; a
    verification review: "Femur_Head_Lt" met the femoral-head limits but no tissue entry."""
    entry = table.lookup(name)
    assert entry is not None and entry.name == tissue and entry.alphaBetaGy == alphaBeta


@pytest.mark.parametrize(("name", "alphaBeta"), [
    ("SpinalCord_PRV05", 2.0), ("SpinalCord PRV 5mm", 2.0), ("Cord_PRV_L", 2.0), ("Rectum_PRV", 3.0),
    ("Esophagus_L_PRV", 3.0)])
def test_a_planning_margin_takes_its_organs_alpha_beta_only(table, name, alphaBeta):
    """A PRV is read at its organ's α/β (the cord PRV at 2, not the default 3), but it is no tissue of the organ:
    no priority and no recovery (a verification review: with the cord's priority 95 a cord PRV took the esophagus
    voxels it overlaps, with the cord's α/β and recovery, in the composite map)."""
    entry = table.lookup(name)
    assert entry.name == name and entry.alphaBetaGy == alphaBeta
    assert entry.priority == -1 and isinstance(entry.recovery, NoRecovery) and not entry.isTarget
    cord, margin = np.array([1, 0, 0], bool), np.array([1, 1, 0], bool)
    esophagus = np.array([0, 1, 1], bool)
    ab, _, _ = alphaBetaMap({"SpinalCord": cord, "SpinalCord_PRV05": margin, "Esophagus": esophagus}, table)
    assert list(ab) == [2.0, 3.0, 3.0]  # the esophagus keeps its voxel inside the margin


def test_a_name_that_only_ends_like_a_side_is_not_an_organ(table):
    assert table.lookup("Hospital") is None and table.lookup("PRV") is None
    assert table.lookup("SacralPlexL2") is None  # a nerve root: not a side of the plexus
    assert table.lookup("L5") is None and table.lookup("Lt") is None and table.lookup("Right") is None


def test_a_target_recovers_nothing_even_with_a_recovery_of_its_own(table):
    """REFERENCE §1: recovery is a normal-tissue concept. A target entry given a recovery (a case file's tissue is
    warned for it) still reads r = 0 in its voxels, also where it overlaps an organ with one (an independent audit:
    removing this rule left the tests green)."""
    edited = table.withEntry(TissueEntry("Tumour", 10.0, ConstantRecovery(0.5), priority=100, isTarget=True,
                                         aliases=("GTV",), prefixes=("GTV",)))
    edited = edited.withEntry(TissueEntry("Rectum", 3.0, ConstantRecovery(0.25), priority=70))
    masks = {"GTV": np.array([1, 1, 0], bool), "Rectum": np.array([0, 1, 1], bool)}
    r = recoveryMap(masks, edited, datetime.date(2020, 1, 1), datetime.date(2021, 3, 1))
    assert list(r) == [0.0, 0.0, 0.25]
