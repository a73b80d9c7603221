"""Build a TFDS dataset from local files, without network:

    python -m cnn.data.prepare mnist --manual_dir=../shared/data/mnist [--data_dir=DIR] [--streaming]

The same happens on first use when a config sets ``dataset.manual_dir``. The files are checked against their
sha256 where it is known; the dataset lands in ``--data_dir`` (default ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``), where every later run finds it. ``--streaming`` writes the ArrayRecord format, which
streaming (``config.dataset.streaming=true``) reads by random access; ``imagenet2012`` is always written so.
Several processes, or hosts sharing the data dir, may prepare one dataset at once: one builds it under a lock file
in the data dir (``.prepare-<dataset>.lock``), the others wait for it and then read it.
"""

from __future__ import annotations

import argparse
import sys

from cnn.data.sources import TFDS_DATASETS, TfdsSource
from cnn.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(TFDS_DATASETS))
    parser.add_argument("--manual_dir", help="folder holding the dataset's original files")
    parser.add_argument("--data_dir", help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    parser.add_argument("--download", action="store_true", help="let TFDS download when no manual_dir is given")
    parser.add_argument("--streaming", action="store_true", help="write ArrayRecord files, for streaming")
    args = parser.parse_args(argv)
    try:
        source = TfdsSource(args.dataset, args.data_dir, args.manual_dir, args.download,
                            streaming=True if args.streaming else None)
        builder = source.prepare()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    splits = {str(name): info.num_examples for name, info in builder.info.splits.items()}
    print(f"{args.dataset}: prepared in {builder.data_dir} with splits {splits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
