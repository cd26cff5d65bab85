# Phase 6: results/table1..4.csv beside the paper's values (each cell also logged to MLflow), and the flat
# results/metrics.json that DVC shows with `dvc metrics show`.


rule table:
    input:
        lambda w: layout.table_inputs(CFG, w.table),
    output:
        "results/{table}.csv",
    wildcard_constraints:
        table="table[1-4]",
    params:
        args=ARGS,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/tables/{{table}}.log",
    threads: 1
    shell:
        "python -m pipeline tables --table {wildcards.table} --out-dir results {params.args} 2> {log}"


rule metrics_json:
    input:
        expand("results/{table}.csv", table=layout.TABLES),
    output:
        "results/metrics.json",
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/tables/metrics_json.log",
    threads: 1
    shell:
        "python -m pipeline metrics-json {input} --out {output} 2> {log}"


rule track_jobs:
    input:
        layout.phase_targets(CFG)["train"],
        layout.phase_targets(CFG)["finetune"],
        layout.phase_targets(CFG)["evaluate"],
    output:
        "results/mlflow_jobs.json",
    params:
        args=ARGS,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/tables/track_jobs.log",
    threads: 1
    shell:
        'python -m pipeline track-jobs {input} --invocation "$PIPELINE_INVOCATION" --out {output} {params.args} 2> {log}'


rule report:
    input:
        tables=expand("results/{table}.csv", table=layout.TABLES),
        metrics=[*layout.phase_targets(CFG)["finetune"], *layout.phase_targets(CFG)["evaluate"]],
        checkpoints=layout.phase_targets(CFG)["train"],
    output:
        "results/report.html",
    params:
        args=ARGS,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/tables/report.log",
    threads: 1
    shell:
        "python -m pipeline report --results-dir results --out {output} {params.args} 2> {log}"
