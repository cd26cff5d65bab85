# Phase 1: raw datasets in their official layouts.
#   embedded profile: generated here (synthetic, seeded)
#   paper profile:    `source: local` expects them at data.<dataset>.root; `source: download` fetches them.

if CFG["data"]["source"] == "synthetic":

    for _ds in layout.DATASETS:

        rule:
            name:
                f"generate_{_ds}"
            output:
                directory(layout.raw_root(CFG, _ds)),
            params:
                args=ARGS,
                dataset=_ds,
                settings=section("data", "synthetic", _ds),
            conda:
                CONDA_ENV
            log:
                f"{LOGS}/generate/{_ds}.log",
            benchmark:
                f"{LOGS}/benchmarks/generate/{_ds}.tsv"
            threads: 1
            shell:
                "python -m pipeline generate-data --dataset {params.dataset} --out {output} {params.args} --threads {threads} 2> {log}"
