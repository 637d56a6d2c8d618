"""Throttling: which crash reports are kept, sampled or thrown away (docs/throttling.md).

:mod:`.engine` runs a rule set; :mod:`.mozilla` and :mod:`.rule_files` provide rule sets;
:mod:`.presets` turns the settings into a :class:`~.engine.Throttler`.
"""
