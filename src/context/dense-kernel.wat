;; The dense scoring kernel of the memory vector index (`dense-columns.ts`), in WebAssembly with 128-bit SIMD.
;;
;; Memory (imported, one per partition): `scores` (f64 per slot) and the dimension-major `columns` (f32 per slot per
;; dimension). Both functions add `weight × column[slot]` to `scores[slot]` for slots 0..n-1, two slots per SIMD lane
;; pair, the f32 value widened to f64 first, the product rounded and then the sum rounded: exactly the arithmetic of
;; the JavaScript loop it replaces, so the scores are identical to the last bit. `score8` adds eight columns in the
;; order given (each slot receives them one at a time, in that order); `score1` adds one. Pointers are byte offsets.
;; An odd last slot is done with scalar instructions.
;;
;; Compiled to `dense-kernel-wasm.ts` by `npm run build:wasm` (wabt); a test checks that the two agree.
(module
  (import "env" "memory" (memory 1))

  (func (export "score8") (param $scores i32) (param $n i32)
    (param $a i32) (param $b i32) (param $c i32) (param $d i32)
    (param $e i32) (param $f i32) (param $g i32) (param $h i32)
    (param $wa f64) (param $wb f64) (param $wc f64) (param $wd f64)
    (param $we f64) (param $wf f64) (param $wg f64) (param $wh f64)
    (local $at i32) (local $end i32) (local $out i32) (local $sum v128) (local $one f64)
    (local $va v128) (local $vb v128) (local $vc v128) (local $vd v128)
    (local $ve v128) (local $vf v128) (local $vg v128) (local $vh v128)
    (local.set $va (f64x2.splat (local.get $wa)))
    (local.set $vb (f64x2.splat (local.get $wb)))
    (local.set $vc (f64x2.splat (local.get $wc)))
    (local.set $vd (f64x2.splat (local.get $wd)))
    (local.set $ve (f64x2.splat (local.get $we)))
    (local.set $vf (f64x2.splat (local.get $wf)))
    (local.set $vg (f64x2.splat (local.get $wg)))
    (local.set $vh (f64x2.splat (local.get $wh)))
    ;; $at: byte offset of the slot pair in a column (4 bytes a slot); its scores sit at $scores + 2 × $at.
    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $pairs
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $out (i32.add (local.get $scores) (i32.shl (local.get $at) (i32.const 1))))
        (local.set $sum (v128.load (local.get $out)))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $va)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $a) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vb)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $b) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vc)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $c) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vd)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $d) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $ve)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $e) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vf)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $f) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vg)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $g) (local.get $at)))))))
        (local.set $sum (f64x2.add (local.get $sum) (f64x2.mul (local.get $vh)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $h) (local.get $at)))))))
        (v128.store (local.get $out) (local.get $sum))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (br $pairs)))
    ;; An odd last slot.
    (if (i32.and (local.get $n) (i32.const 1))
      (then
        (local.set $out (i32.add (local.get $scores) (i32.shl (local.get $at) (i32.const 1))))
        (local.set $one (f64.load (local.get $out)))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wa)
          (f64.promote_f32 (f32.load (i32.add (local.get $a) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wb)
          (f64.promote_f32 (f32.load (i32.add (local.get $b) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wc)
          (f64.promote_f32 (f32.load (i32.add (local.get $c) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wd)
          (f64.promote_f32 (f32.load (i32.add (local.get $d) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $we)
          (f64.promote_f32 (f32.load (i32.add (local.get $e) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wf)
          (f64.promote_f32 (f32.load (i32.add (local.get $f) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wg)
          (f64.promote_f32 (f32.load (i32.add (local.get $g) (local.get $at)))))))
        (local.set $one (f64.add (local.get $one) (f64.mul (local.get $wh)
          (f64.promote_f32 (f32.load (i32.add (local.get $h) (local.get $at)))))))
        (f64.store (local.get $out) (local.get $one)))))

  (func (export "score1") (param $scores i32) (param $n i32) (param $a i32) (param $wa f64)
    (local $at i32) (local $end i32) (local $out i32) (local $va v128)
    (local.set $va (f64x2.splat (local.get $wa)))
    (local.set $end (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2)))
    (block $done
      (loop $pairs
        (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
        (local.set $out (i32.add (local.get $scores) (i32.shl (local.get $at) (i32.const 1))))
        (v128.store (local.get $out) (f64x2.add (v128.load (local.get $out)) (f64x2.mul (local.get $va)
          (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $a) (local.get $at)))))))
        (local.set $at (i32.add (local.get $at) (i32.const 8)))
        (br $pairs)))
    (if (i32.and (local.get $n) (i32.const 1))
      (then
        (local.set $out (i32.add (local.get $scores) (i32.shl (local.get $at) (i32.const 1))))
        (f64.store (local.get $out) (f64.add (f64.load (local.get $out)) (f64.mul (local.get $wa)
          (f64.promote_f32 (f32.load (i32.add (local.get $a) (local.get $at))))))))))
)
