#!/usr/bin/env bash
# On the device: puts what tools/gpu/pack.sh packed back where the tests and benches look
# (.device/gpu, target/tensorrt, .device/pylib, .device/anchor, .device/e2e). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
pack=.device/pack
[ -d "$pack" ] || { echo "no $pack: carry it (tools/gpu/pack.sh makes it)" >&2; exit 1; }
mkdir -p target
for f in "$pack"/*.tar.xz; do
    case "$(basename "$f")" in
        trt.tar.xz) tar xJf "$f" -C target ;;
        *) tar xJf "$f" -C .device ;;
    esac
    echo "unpacked $(basename "$f")"
done
