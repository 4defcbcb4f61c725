;; A reporter with an _initialize that logs "initialized" and counts the
;; calls it serves; each call outputs {"version":1} and logs "version 1".
;; Tests make version 2 by replacing the byte '1' of both strings.
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))
  (import "coordinatord" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "{\"version\":1}")
  (data (i32.const 48) "version 1")
  (data (i32.const 64) "initialized")
  (global $inits (mut i32) (i32.const 0))
  (func (export "_initialize")
    (global.set $inits (i32.add (global.get $inits) (i32.const 1)))
    (call $log (i32.const 1) (i32.const 64) (i32.const 11)))
  (func (export "coordinatord_abi_v1"))
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))
  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $log (i32.const 1) (i32.const 48) (i32.const 9))
    (call $output (i32.const 16) (i32.const 13))
    (i32.const 0))
)
