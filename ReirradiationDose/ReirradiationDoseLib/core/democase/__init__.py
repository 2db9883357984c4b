"""The built-in demo case: a deterministic, analytic locally recurrent rectal cancer re-irradiation patient.

Everything is defined by smooth analytic functions of LPS millimetres, so the ground truth (doses at named points,
the deformation, the MRI transform, the true GTV) is known exactly and is written beside the DICOM files:

- :mod:`.anatomy`: the pelvic phantom (prior anatomy, the deformation to the current anatomy, the recurrence, CT
  and T2-weighted MR contrast, the MRI transform);
- :mod:`.dose`: analytic dose models of the prior (50 Gy/25 fx, 4-field box) and current (30.6 Gy/17 fx) plans;
- :mod:`.observers`: simulated GTV delineations of several observers in two rounds;
- :mod:`.generate`: :func:`generateDemoCase` writes the case (DICOM, case.json, truth.json, marks).
"""

from __future__ import annotations

__all__ = ["generateDemoCase", "DemoCase", "GENERATOR_VERSION"]


def __getattr__(name):  # lazy: importing the package stays cheap
    if name in __all__:
        from . import generate

        return getattr(generate, name)
    raise AttributeError(name)
