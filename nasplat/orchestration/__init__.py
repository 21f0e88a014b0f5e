"""Where and in which order things run: the phases of an experiment (training, search, export),
the search driver and its evaluator pools, and the one place that decides local vs cluster and
starts or joins Ray (`cluster`).

Import the submodules you need (`nasplat.orchestration.driver`, `.run`, `.training`, ...): this
package module itself imports nothing, so a command pays only for what it uses.
"""
