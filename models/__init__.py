"""Detection: miner-signature rules, launch anomalies and an isolation forest, fused into findings.

    from spendwatch.models import detect, DetectionConfig
    findings = detect(tables, config=DetectionConfig(), now=scan_time)
"""

from __future__ import annotations

from .config import DetectionConfig
from .detect import detect, run_detectors
from .fusion import FusionConfig
from .iforest import IForestConfig
from .rules import RULES

__all__ = ["RULES", "DetectionConfig", "FusionConfig", "IForestConfig", "detect", "run_detectors"]
