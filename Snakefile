"""AudioCLIP reproduction, from raw data to the paper's Tables 1-4.

    snakemake --cores all results/table3.csv          # the embedded default: synthetic data, CPU, minutes
    snakemake --cores all --config profile=paper      # the paper's protocol on the real data

params.yaml holds every hyper-parameter; workflow/rules/ holds one file per phase.
"""

from snakemake.utils import min_version

min_version("9.0")


configfile: "params.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/cache.smk"
if CFG["train"]["released"]:  # evaluate-only: the released models stand in for the AudioSet stages

    include: "workflow/rules/released.smk"

else:

    include: "workflow/rules/train.smk"


include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/phases.smk"


# The default target names every per-job metric file as well as the tables: Snakemake does not regenerate a
# deleted intermediate file while the tables built from it look up to date (snakemake/snakemake#1978), so a
# deleted fold is rebuilt, with the tables that read it, by `snakemake --cores all`.
rule all:
    input:
        layout.phase_targets(CFG)["finetune"],
        layout.phase_targets(CFG)["evaluate"],
        expand("results/{table}.csv", table=layout.TABLES),
        "results/metrics.json",
        "results/mlflow_jobs.json",
        "results/report.html",
    default_target: True
