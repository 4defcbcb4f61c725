;; correlation.wat: a healthy correlation module written by hand against ABI
;; v1. Whatever the event, it asks to hold the leases of the event's affected
;; datacenters (no "datacenters" field) and leaves a note:
;;
;;   {"hold":true,"notes":["wat-correlation: holding the affected datacenters"]}
(module
  (import "coordinatord" "output" (func $output (param i32 i32)))

  (memory (export "memory") 1)

  ;; [16, 91): the answer, 75 bytes.
  (data (i32.const 16) "{\"hold\":true,\"notes\":[\"wat-correlation: holding the affected datacenters\"]}")

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a buffer at 1024, grown to hold size bytes.
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (local $end i32)
    (if (i32.gt_u (local.get $size) (i32.const 0x7fff0000))
      (then (return (i32.const 0))))
    (local.set $end (i32.add (i32.const 1024) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.shl (memory.size) (i32.const 16)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.sub
                  (i32.shr_u (i32.add (local.get $end) (i32.const 0xffff)) (i32.const 16))
                  (memory.size)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (i32.const 1024))

  (func (export "coordinatord_on_correlation") (param $ptr i32) (param $len i32) (result i32)
    (call $output (i32.const 16) (i32.const 75))
    (i32.const 0))
)
