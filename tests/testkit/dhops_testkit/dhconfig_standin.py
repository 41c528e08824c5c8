"""Stand-in for Deephaven's `dhconfig` (closed source, not installable here).

It implements only the two documented calls the module makes, against a directory that
plays the configuration server's store, and logs every call so tests can see whether an
import happened:
  dhconfig properties export NAME --directory DIR
  dhconfig properties import FILE
"""

import argparse
import pathlib
import shutil
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True, type=pathlib.Path)
    parser.add_argument("--log", required=True, type=pathlib.Path)
    parser.add_argument("words", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    with args.log.open("a") as log:
        log.write(" ".join(args.words) + "\n")
    words = args.words
    if words[:2] == ["properties", "export"] and len(words) == 5 and words[3] == "--directory":
        source = args.store / words[2]
        if not source.is_file():
            print(
                f"Property file {words[2]} not found in the configuration server", file=sys.stderr
            )
            return 1
        shutil.copyfile(source, pathlib.Path(words[4]) / words[2])
        return 0
    if words[:2] == ["properties", "import"] and len(words) == 3:
        path = pathlib.Path(words[2])
        shutil.copyfile(path, args.store / path.name)
        return 0
    print(f"unsupported: dhconfig {' '.join(words)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
