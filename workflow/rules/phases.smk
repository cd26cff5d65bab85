# One target rule per phase: `snakemake phase_<name>` builds that phase. DVC's stages call exactly these
# (dvc.yaml is generated from pipeline/dvc_stages.py; tests/test_dvc.py checks they agree).

for _phase, _targets in layout.phase_targets(CFG).items():

    rule:
        name:
            f"phase_{_phase}"
        input:
            _targets,
        default_target: False
