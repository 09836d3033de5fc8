//! The loop and its [`Budget`]: a reservation before every call, the ceiling on the request,
//! the reservation handed to the recorder, released when the call fails.

use super::*;

/// Grants `grants` reservations, then refuses; remembers what it saw.
struct Ledger {
    ceiling: u32,
    grants: Mutex<usize>,
    estimates: Mutex<Vec<CallEstimate>>,
    released: Mutex<Vec<Reservation>>,
}

impl Ledger {
    fn new(ceiling: u32, grants: usize) -> Self {
        Self { ceiling, grants: Mutex::new(grants), estimates: Mutex::default(), released: Mutex::default() }
    }
}

#[async_trait::async_trait]
impl Budget for Ledger {
    fn output_ceiling(&self) -> Option<u32> {
        Some(self.ceiling)
    }

    async fn reserve(&self, estimate: &CallEstimate) -> Result<Reservation, BudgetError> {
        self.estimates.lock().unwrap().push(estimate.clone());
        let mut grants = self.grants.lock().unwrap();
        if *grants == 0 {
            return Err(BudgetExceeded::new(BudgetLimit::TaskCost, estimate).into());
        }
        *grants -= 1;
        Ok(Reservation { id: Uuid::new_v4(), cost_usd: estimate.cost_usd, tokens: estimate.tokens() })
    }

    async fn release(&self, reservation: Reservation) -> Result<(), BudgetError> {
        self.released.lock().unwrap().push(reservation);
        Ok(())
    }
}

fn priced_analyst() -> AgentSpec {
    let mut analyst = spec("analyst");
    analyst.model = Some("gpt-4o-mini".into());
    analyst
}

#[tokio::test]
async fn each_call_is_reserved_at_its_worst_case_and_the_reservation_goes_with_its_record() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "calculator", json!({"expression": "6 * 7"}))]), answer("42")]));
    let ledger = Ledger::new(500, 10);
    let step = Step::new();
    let input = StepInput { budget: &ledger, ..step.input() };
    let log = Log::default();
    runner(model.clone(), LoopSettings::default()).run(&priced_analyst(), &input, &log).await.unwrap();

    let seen = model.seen();
    assert!(seen.iter().all(|r| r.max_tokens == Some(500)), "the ceiling is on every request");
    let estimates = ledger.estimates.lock().unwrap().clone();
    assert_eq!(estimates.len(), 2);
    let price = PriceTable::builtin();
    for (estimate, request) in estimates.iter().zip(&seen) {
        assert_eq!(estimate.model, "gpt-4o-mini");
        assert_eq!(estimate.prompt_tokens, crate::llm::prompt_tokens(request));
        assert_eq!(estimate.max_output_tokens, 500);
        let worst = Usage { prompt_tokens: estimate.prompt_tokens, completion_tokens: 500, cached_tokens: 0 };
        assert_eq!(estimate.cost_usd, price.cost("gpt-4o-mini", &worst).unwrap());
        assert!(estimate.cost_usd > 0.0);
    }
    // The second call's prompt holds the first exchange: it is counted, not guessed.
    assert!(estimates[1].prompt_tokens > estimates[0].prompt_tokens);
    let records = log.llm.lock().unwrap().clone();
    let reserved: Vec<f64> = records.iter().map(|r| r.reservation.as_ref().unwrap().cost_usd).collect();
    assert_eq!(reserved, [estimates[0].cost_usd, estimates[1].cost_usd]);
    assert!(ledger.released.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_call_that_does_not_fit_is_never_made() {
    let model = Arc::new(Scripted::new([calls(&[("c1", "calculator", json!({"expression": "6 * 7"}))]), answer("42")]));
    let ledger = Ledger::new(500, 1);
    let step = Step::new();
    let input = StepInput { budget: &ledger, ..step.input() };
    let log = Log::default();
    let err = runner(model.clone(), LoopSettings::default()).run(&priced_analyst(), &input, &log).await.unwrap_err();
    let AgentError::BudgetExceeded(exceeded) = &err else { panic!("{err}") };
    assert_eq!(exceeded.limit, BudgetLimit::TaskCost);
    assert!(err.to_string().starts_with("budget_exceeded: "), "{err}");
    assert_eq!(model.seen().len(), 1, "only the reserved call reached the model");
    assert_eq!(log.llm.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_failed_call_gives_its_reservation_back() {
    let model = Arc::new(Scripted::new([])); // the script is over at once: the call fails
    let ledger = Ledger::new(64, 10);
    let step = Step::new();
    let input = StepInput { budget: &ledger, ..step.input() };
    let log = Log::default();
    let err = runner(model, LoopSettings::default()).run(&priced_analyst(), &input, &log).await.unwrap_err();
    assert!(matches!(err, AgentError::Llm(LlmError::InvalidResponse(_))), "{err}");
    let released = ledger.released.lock().unwrap().clone();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].tokens, ledger.estimates.lock().unwrap()[0].tokens());
    assert!(log.llm.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_estimate_takes_the_ceiling_the_request_carries() {
    let request = ChatRequest { max_tokens: Some(100), model: Some("gpt-4o".into()), ..ChatRequest::default() };
    let estimate = CallEstimate::worst_case(&request, "gpt-4o", &PriceTable::builtin()).await;
    assert_eq!(estimate.max_output_tokens, 100);
    assert_eq!(estimate.tokens(), estimate.prompt_tokens + 100);
}

#[tokio::test]
async fn without_limits_requests_go_out_unchanged() {
    let model = Arc::new(Scripted::new([answer("ok")]));
    let log = Log::default();
    runner(model.clone(), LoopSettings::default()).run(&priced_analyst(), &Step::new().input(), &log).await.unwrap();
    assert_eq!(model.seen()[0].max_tokens, None);
    assert_eq!(log.llm.lock().unwrap()[0].reservation, None);
}
