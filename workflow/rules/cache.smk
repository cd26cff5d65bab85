# Phase 2: decode each dataset once into an HDF5 cache at the model's sample rate.


rule cache:
    input:
        raw=lambda w: raw_input(w.dataset),
    output:
        f"{W}/cache/{{dataset}}.h5",
    params:
        args=ARGS,
        settings=lambda w: section("data", w.dataset) + section("data", "sample_rate"),
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/cache/{{dataset}}.log",
    benchmark:
        f"{LOGS}/benchmarks/cache/{{dataset}}.tsv"
    threads: 1
    shell:
        "python -m pipeline cache --dataset {wildcards.dataset} --root {input.raw} --out {output} {params.args} --threads {threads} 2> {log}"
