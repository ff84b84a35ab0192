#!/bin/sh
# Every AVX/AVX-512 instruction (VEX or EVEX encoded) of PROGRAM lies in a function of the kernels' avx2 or avx512
# namespace (cpu/kernels.hpp compiles each instruction set's kernels in a namespace of its own):
# code that any CPU may run, baseline code, must never use the wide registers.
#   kernel_isolation.sh OBJDUMP PROGRAM
set -eu
"$1" -d --no-show-raw-insn -C "$2" | awk '
  /^[0-9a-f]+ <.*>:$/ { fn = $0 }
  (/ymm|zmm|[xy]mm(1[6-9]|2[0-9]|3[01])/ || /\tv[a-z0-9]+ /) && fn !~ /universeg::kernels::(avx2|avx512)::/ { bad[fn]++ }
  END { n = 0; for (f in bad) { if (n++ < 10) print "wide registers outside the AVX kernels:", f }
        if (n) exit 1; print "AVX and AVX-512 code only in the kernels of those instruction sets" }'
