;; guest_error.wat: misbehaves on purpose. A reporter that gives up: it calls
;; fail with its reason and returns 2. The host reports a guest_error with
;; that text.
(module
  (import "coordinatord" "fail" (func $fail (param i32 i32)))

  (memory (export "memory") 1)
  ;; [16, 59): the reason, 43 bytes.
  (data (i32.const 16) "billing API unreachable: connection refused")

  (func (export "coordinatord_abi_v1"))

  ;; coordinatord_alloc: a fixed buffer at 1024 (0 if the event does not fit).
  (func (export "coordinatord_alloc") (param $size i32) (result i32)
    (select (i32.const 1024) (i32.const 0) (i32.le_u (local.get $size) (i32.const 64512))))

  (func (export "coordinatord_on_job_result") (param i32 i32) (result i32)
    (call $fail (i32.const 16) (i32.const 43))
    (i32.const 2))
)
