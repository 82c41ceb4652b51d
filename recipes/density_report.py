"""Weights report of a saved density index: log-weight histograms per bucket, rows vs sampling mass, the rarest and
commonest prompts, merged duplicate groups, ESS and a PCA map (PNGs + markdown). The density stage writes it too.

Usage:

    python recipes/density_report.py --density_dir outputs/density
    python recipes/density_report.py --density_dir outputs/density_hh --output_dir outputs/density_hh/report
"""

from density_rlhf.recipe_kit import (
    DensityReportArguments,
    density_report,
    distributed_run,
    logger,
    parse_args,
    setup_logging,
)


def main(script_args: DensityReportArguments) -> None:
    logger.info("wrote %s", density_report(script_args))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        (script_args,) = parse_args([DensityReportArguments])
        main(script_args)
