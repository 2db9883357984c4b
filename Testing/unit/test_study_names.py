"""matchStructureName: choosing the observer's GTV among an RTSTRUCT's ROIs by a tolerant name match."""

import pytest
from DelineationReviewLib.core.study import matchStructureName, rankStructureMatches


@pytest.mark.parametrize("candidates, wanted, expected", [
    (["PTV", "GTV", "Rectum"], "GTV", "GTV"),                       # exact
    (["PTV", "gtv ", "Rectum"], "GTV", "gtv "),                     # case and spaces
    (["PTV", "G T V"], "GTV", "G T V"),
    (["PTV", "GTVp", "Rectum"], "GTV", "GTVp"),                     # TG-263 primary GTV
    (["PTV", "Gross Tumor Volume"], "GTV", "Gross Tumor Volume"),   # spelled out
    (["PTV_5mm", "GTV_obs3", "Bladder"], "GTV", "GTV_obs3"),        # suffix
    (["obs2 GTV", "CTV"], "GTV", "obs2 GTV"),                       # prefix
    (["GTV-1", "PTV"], "GTV", "GTV-1"),
    (["GTV", "GTV_obs3"], "GTV", "GTV"),                            # exact beats a suffixed name
    (["gtv", "GTVp"], "GTV", "gtv"),                                # normalised equality beats an alias
    (["Spinal Cord", "GTV"], "SpinalCord", "Spinal Cord"),
    (["Cord", "GTV"], "SpinalCord", "Cord"),
    (["Femoral Head L", "Femoral Head R"], "Femur_Head_L", "Femoral Head L"),
    (["Rectum", "PTV"], "GTV", None),                               # nothing matches
    (["PTV_GTV", "CTV"], "GTV", None),                              # another target type that mentions GTV
    (["GTV_ring", "z_GTV", "GTV+5mm"], "GTV", None),                 # derived helper structures
    (["GTV1", "GTV2"], "GTV", None),                                # ambiguous
    (["GTVnodal"], "GTV", None),                                    # a different GTV, not an alias
    ([], "GTV", None),
])
def test_match_structure_name(candidates, wanted, expected):
    assert matchStructureName(candidates, wanted) == expected


def test_ranking_lists_every_match_best_first():
    ranked = rankStructureMatches(["GTV_obs3", "GTVp", "gtv", "GTV", "PTV"], "GTV")
    assert ranked == [(0, "GTV"), (1, "gtv"), (2, "GTVp"), (3, "GTV_obs3")]
    assert rankStructureMatches(["GTV1", "GTV2"], "GTV") == [(3, "GTV1"), (3, "GTV2")]
