// The Swift API against the macOS slice of the library and the real
// default model (pulled into $EDGELOOP_MODELS_DIR or ~/.cache/edgeloop/models
// with `edgeloop pull smollm2-135m-instruct`). Run with `swift test`.

import XCTest
@testable import Edgeloop

final class EdgeloopTests: XCTestCase {
    static let model = "smollm2-135m-instruct"
    static let prompt = "What is the capital of France?"
    static var engine: Engine!

    override class func setUp() {
        super.setUp()
        engine = try! Engine.open(model: model, config: EngineConfig())
    }

    func greedy(_ maxTokens: UInt32) -> GenerateConfig {
        GenerateConfig(maxTokens: maxTokens, temperature: 0)
    }

    final class Collect: TokenListener, @unchecked Sendable {
        var pieces: [String] = []
        let stopAfter: Int
        init(stopAfter: Int = .max) { self.stopAfter = stopAfter }
        func onToken(text: String) -> Bool {
            pieces.append(text)
            return pieces.count < stopAfter
        }
    }

    func testDescribesTheModel() {
        let info = Self.engine.info()
        XCTAssertEqual(info.name, Self.model)
        XCTAssertEqual(info.architecture, "llama")
        XCTAssertEqual(info.backend, .cpu)
        XCTAssertEqual(version(), "0.1.0")
    }

    func testStreamedPiecesMakeTheReply() throws {
        let listener = Collect()
        let r = try Self.engine.newSession(systemPrompt: nil).generate(
            prompt: Self.prompt, config: greedy(16), listener: listener)
        XCTAssertEqual(r.finishReason, .length)
        XCTAssertEqual(r.completionTokens, 16)
        XCTAssertEqual(listener.pieces.joined(), r.text)
    }

    func testAsyncStreamGivesTheBlockingReply() async throws {
        let blocking = try Self.engine.newSession(systemPrompt: nil).generate(
            prompt: Self.prompt, config: greedy(16), listener: nil
        ).text
        var streamed = ""
        for try await piece in Self.engine.newSession(systemPrompt: nil).replyStream(Self.prompt, config: greedy(16)) {
            streamed += piece
        }
        XCTAssertEqual(streamed, blocking)
        let replied = try await Self.engine.newSession(systemPrompt: nil).reply(Self.prompt, config: greedy(16))
        XCTAssertEqual(replied, blocking)
    }

    func testAListenerReturningFalseCancels() throws {
        let listener = Collect(stopAfter: 2)
        let r = try Self.engine.newSession(systemPrompt: nil).generate(
            prompt: Self.prompt, config: greedy(64), listener: listener)
        XCTAssertEqual(r.finishReason, .cancelled)
        XCTAssertEqual(listener.pieces.count, 2)
    }

    func testSolvesWithSelfConsistency() throws {
        let r = try Self.engine.solve(
            question: "What is 7 + 5?",
            config: SolveConfig(strategy: "self-consistency", samples: 4, maxTokens: 64))
        XCTAssertEqual(r.spend.samples, 4)
        XCTAssertEqual(r.samples.count, 4)
        XCTAssertNotNil(r.answer)
    }

    func testKeepsTraces() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let traces = try Traces.open(path: dir.appendingPathComponent("traces.sqlite").path, maxBytes: nil)
        let checked = try Self.engine.solveChecked(
            question: "What is 3 + 4?",
            solve: SolveConfig(strategy: "self-consistency", samples: 4, maxTokens: 64),
            verify: VerifyConfig(stages: ["agreement"], votes: 1, minShare: 0),
            traces: traces, consent: true)
        let id = try XCTUnwrap(checked.traceId)
        XCTAssertEqual(try traces.list(limit: 10, offset: 0, state: nil).map(\.id), [id])
        XCTAssertEqual(try traces.stats().traces, 1)
    }

    func testErrorsAreTyped() {
        XCTAssertThrowsError(try Engine.open(model: "no-such-model", config: EngineConfig())) { error in
            guard case EdgeloopError.ModelNotFound(let reason) = error else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertTrue(reason.contains("no-such-model"))
        }
        XCTAssertThrowsError(
            try Self.engine.newSession(systemPrompt: nil).generate(prompt: Self.prompt, config: greedy(0), listener: nil)
        ) { error in
            guard case EdgeloopError.InvalidArgument = error else {
                return XCTFail("unexpected \(error)")
            }
        }
    }
}
