// Conveniences over the generated API (Sources/Edgeloop/Generated).

import Foundation

/// Feeds streamed pieces into an `AsyncThrowingStream`; stops generation
/// once the stream's consumer has gone.
private final class StreamListener: TokenListener, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<String, Error>.Continuation

    init(_ continuation: AsyncThrowingStream<String, Error>.Continuation) {
        self.continuation = continuation
    }

    func onToken(text: String) -> Bool {
        if case .terminated = continuation.yield(text) {
            return false
        }
        return true
    }
}

extension Session {
    /// The reply to `prompt` as a stream of text pieces, generated off the
    /// caller's thread. Leaving the `for try await` loop early stops
    /// generation; errors are `EdgeloopError`s thrown from the loop.
    ///
    ///     for try await piece in session.replyStream("Hello!") { label.text += piece }
    public func replyStream(
        _ prompt: String, config: GenerateConfig = GenerateConfig()
    ) -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let listener = StreamListener(continuation)
            let task = Task.detached {
                do {
                    _ = try await self.generateAsync(prompt: prompt, config: config, listener: listener)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { @Sendable termination in
                if case .cancelled = termination {
                    self.cancel()
                    task.cancel()
                }
            }
        }
    }

    /// The whole reply to `prompt`.
    public func reply(_ prompt: String, config: GenerateConfig = GenerateConfig()) async throws -> String {
        try await generateAsync(prompt: prompt, config: config, listener: nil).text
    }
}
