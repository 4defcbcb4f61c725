;; A reporter that logs 1000 lines per call at warn level, and outputs {}.
(module
  (import "coordinatord" "log" (func $log (param i32 i32 i32)))
  (import "coordinatord" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "flood")
  (data (i32.const 32) "{}")
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (local $i i32)
    (loop $again
      (call $log (i32.const 2) (i32.const 16) (i32.const 5))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $again (i32.lt_u (local.get $i) (i32.const 1000))))
    (call $output (i32.const 32) (i32.const 2))
    (i32.const 0))
)
